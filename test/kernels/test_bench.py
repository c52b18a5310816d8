"""`pvrnn-ros bench` machinery: rows per backend next to the reference, JSON out (timings are not
asserted: they live in the benchmark, not in tests)."""
from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("numba")

from pvrnn_ros.kernels.bench import cpu_identity, format_table, run_bench, to_json  # noqa: E402


def test_bench_quick_kernel_and_engine_cases(tmp_path):
    res = run_bench(quick=True, backends=["cpu"], only="bf", log=lambda *_: None)
    by = {(r.scenario, r.backend): r for r in res.rows}
    assert set(by) == {("b", "reference"), ("b", "cpu"), ("f", "reference"), ("f", "cpu"), ("f", "cpu_generic")}
    for r in res.rows:
        assert r.n >= 2 and 0 < r.median_ms <= r.p90_ms and math.isfinite(r.p90_ms)
    for case, fast in (("b", "cpu"), ("f", "cpu"), ("f", "cpu_generic")):
        cpu, ref = by[(case, fast)], by[(case, "reference")]
        assert ref.speedup is None and cpu.speedup == pytest.approx(ref.median_ms / cpu.median_ms)
    assert by[("f", "cpu")].n == by[("f", "cpu_generic")].n  # interleaved on one stream
    assert cpu_identity() in res.machine  # which host, so figures of different CPUs are not mixed
    table = format_table(res)
    assert "(f)  cpu" in table and "ErrorRegression.step" in table
    to_json(res, tmp_path / "bench.json")
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["compile_s"]["cpu"] >= 0
    assert [(r["scenario"], r["backend"]) for r in data["rows"]] == [(r.scenario, r.backend) for r in res.rows]
    assert data["rows"][1]["median_ms"] == by[("b", "cpu")].median_ms


def test_cpu_identity_names_the_host_llvm_compiles_for_and_its_widest_vector_isa():
    from llvmlite import binding as llvm

    ident = cpu_identity()
    features = llvm.get_host_cpu_features()
    widest = "avx512f" if features.get("avx512f") else "avx2" if features.get("avx2") else None
    assert f"LLVM host {llvm.get_host_cpu_name()}," in ident
    if widest:
        assert ident.endswith(f", {widest})")


def test_bench_batched_case_reports_per_window_and_ratio(monkeypatch, tmp_path):
    """A batched case times its B = 1 tick interleaved: per-window cost and the ratio, in the
    table and the JSON, threaded and one-thread."""
    from pvrnn_ros.core.config import LayerConfig, ModelConfig
    from pvrnn_ros.kernels import bench

    tiny = ModelConfig(layers=[LayerConfig(d=9, z=2, tau=2.0), LayerConfig(d=5, z=1, tau=6.0)])
    monkeypatch.setattr(bench, "scenarios", lambda: [bench.Scenario("d", "tiny batched", tiny, 3, 6, 4, 5)])
    res = run_bench(quick=True, backends=["cpu"], only="d", log=lambda *_: None)
    rows = {r.backend: r for r in res.rows}
    assert set(rows) == {"reference", "cpu", "cpu_1t"}
    assert rows["reference"].ratio_vs_b1 is None
    for label in ("cpu", "cpu_1t"):
        r = rows[label]
        assert r.batch == 5 and r.b1_median_ms > 0 and r.ratio_vs_b1 > 0
        assert r.per_window_ms == pytest.approx(r.median_ms / 5)
    assert "ms per window" in format_table(res)
    to_json(res, tmp_path / "bench.json")
    data = json.loads((tmp_path / "bench.json").read_text())
    assert {r["backend"]: r["ratio_vs_b1"] for r in data["rows"]}["cpu"] == rows["cpu"].ratio_vs_b1
