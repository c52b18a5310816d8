from pathlib import Path

import pytest
import yaml

from pvrnn_ros.core.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_yaml_equals_builtin_defaults():
    assert Config.load(ROOT / "config" / "pvrnn.yaml").to_dict() == Config().to_dict()


def test_roundtrip_through_yaml(tmp_path):
    cfg = Config()
    cfg.model.layers[1].tau = 16.0
    cfg.er.meta_prior = [0.1, 0.2]
    cfg.save(tmp_path / "c.yaml")
    assert Config.load(tmp_path / "c.yaml").to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "raw, key, value",
    [
        ({"model": {"layers": [{"d": 10, "z": 2, "tau": 0.0}]}}, "model.layers[0].tau", "0.0"),
        ({"model": {"layers": [{"d": 0, "z": 2}]}}, "model.layers[0].d", "0"),
        ({"model": {"layers": [{"d": 4, "z": -1}]}}, "model.layers[0].z", "-1"),
        ({"model": {"layers": [{"d": 4, "z": 1, "w": -0.5}]}}, "model.layers[0].w", "-0.5"),
        ({"model": {"posterior": "B"}}, "model.posterior", "'B'"),
        ({"er": {"backend": "gpu"}}, "er.backend", "'gpu'"),
        ({"er": {"window": 0}}, "er.window", "0"),
        ({"er": {"meta_prior": [0.1]}}, "er.meta_prior", "[0.1]"),
        ({"data": {"rate_hz": -10}}, "data.rate_hz", "-10"),
        ({"train": {"epochs": "many"}}, "train.epochs", "'many'"),
    ],
)
def test_invalid_values_name_key_and_value(raw, key, value):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(raw)
    assert key in str(err.value) and value in str(err.value)


def test_exponent_numbers_that_pyyaml_reads_as_strings_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n  weight_decay: 2.5E-3\ner:\n  lr: -1e-1\n")
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "1e-4"  # what PyYAML hands over
    with pytest.raises(ConfigError, match=r"er.lr = -0.1"):  # a number now, checked as one
        Config.load(path)
    path.write_text("train:\n  lr: 1e-4\n  weight_decay: 2.5E-3\n")
    cfg = Config.load(path)
    assert cfg.train.lr == 1e-4 and cfg.train.weight_decay == 2.5e-3
    with pytest.raises(ConfigError, match=r"train.lr = '1e-4x'"):  # not a number: named as given
        Config.from_dict({"train": {"lr": "1e-4x"}})
    with pytest.raises(ConfigError, match=r"train.epochs = '1e3'"):  # integers stay integers
        Config.from_dict({"train": {"epochs": "1e3"}})


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.layers\[1\]\.tau_typo"):
        Config.from_dict({"model": {"layers": [{"d": 4, "z": 1}, {"d": 4, "z": 1, "tau_typo": 3}]}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"trian": {"epochs": 3}}))
    with pytest.raises(ConfigError, match="trian") as err:
        Config.load(path)
    assert str(path) in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(tmp_path / "nope.yaml")
    (tmp_path / "x.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config.load(tmp_path / "x.yaml")


@pytest.mark.parametrize(
    "name, rate, taus, train, er",
    [("pvrnn_10hz.yaml", 10.0, (2.0, 16.0), {"restarts": 4}, {"lr": 0.05, "meta_prior_scale": 0.1, "forgetting": 0.6}),
     ("pvrnn_20hz.yaml", 20.0, (4.0, 16.0), {"restarts": 4}, {})],
)
def test_shipped_rate_configs_are_the_documented_recommendation(name, rate, taus, train, er):
    # docs/results.md recommends exactly these settings per rate; everything else stays default
    cfg = Config.load(ROOT / "config" / name)
    assert cfg.data.rate_hz == rate
    assert cfg.model.posterior == "d+A"
    assert [(l.d, l.z, l.tau, l.w) for l in cfg.model.layers] == [(48, 4, taus[0], 0.002), (24, 2, taus[1], 0.002)]
    assert cfg.er.adam_reset is True
    default, loaded = Config().to_dict(), cfg.to_dict()
    assert {k: v for k, v in loaded["train"].items() if v != default["train"][k]} == train
    for key, value in er.items():
        assert loaded["er"][key] == value != default["er"][key], key
    assert loaded["plan"] == default["plan"]
    assert f"config/{name}" in (ROOT / "docs" / "results.md").read_text()


def test_lr_schedule_is_validated():
    for key, value in (("lr_schedule", "step"), ("lr_final", 1.5), ("lr_final", -0.1)):
        cfg = Config()
        setattr(cfg.train, key, value)
        with pytest.raises(ConfigError, match=f"train.{key}"):
            cfg.validate()
