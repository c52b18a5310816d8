import numpy as np
import pytest
import torch

from pvrnn_ros.core.config import Config, ERConfig, LayerConfig, ModelConfig
from pvrnn_ros.core.data import Demonstration


def small_config(**model_kwargs) -> Config:
    layers = model_kwargs.pop("layers", [LayerConfig(d=12, z=2, tau=2.0, w=0.01), LayerConfig(d=6, z=1, tau=6.0, w=0.01)])
    cfg = Config(model=ModelConfig(layers=layers, **model_kwargs))
    cfg.train.epochs = 20
    cfg.train.checkpoint_every = 10
    return cfg.validate()


def sine_demos(n=3, seconds=4.0, rate=10.0, joints=3, seed=0) -> list[Demonstration]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.arange(0, seconds - 1e-9 + (i * 0.5), 1.0 / rate)  # different lengths
        phase = rng.uniform(0, 2 * np.pi)
        pos = np.stack([np.sin(1.3 * t * (1 + 0.2 * j) + phase) for j in range(joints)], 1)
        out.append(Demonstration(f"s{i}", t, pos, [f"j{j}" for j in range(joints)], f"mem{i}"))
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


PRIMITIVE_RATE = 10.0


def primitive_demos(n, seed0, seconds=14.0):
    """Kinematic demonstrations: motion primitives chained by the demonstrator's probabilistic FSM."""
    from pvrnn_ros.sim.primitives import kinematic_episode

    out = []
    for i in range(n):
        t, q, _ = kinematic_episode(seconds, PRIMITIVE_RATE, seed=seed0 + i)
        out.append(Demonstration(f"ep{seed0 + i}", t, q, [f"j{j}" for j in range(q.shape[1])], f"kin{seed0 + i}"))
    return out


@pytest.fixture(scope="session")
def trained():
    """A small PV-RNN trained on 8 primitive chains (shared by the ER and learning tests)."""
    from pvrnn_ros.core.train import Trainer, build_model

    torch.set_num_threads(1)
    cfg = Config(model=ModelConfig(layers=[LayerConfig(d=32, z=3, tau=2.0, w=0.005),
                                           LayerConfig(d=16, z=2, tau=6.0, w=0.005)]))
    cfg.data.rate_hz = PRIMITIVE_RATE
    cfg.train.lr = 3e-3
    cfg.er = ERConfig(window=12, iterations=15, first_iterations=40, lr=0.1, horizon=8, backend="reference")
    model = build_model(cfg.validate(), primitive_demos(8, 0))
    trainer = Trainer(model)
    model.history["first_epoch"] = [trainer.epoch().__dict__]
    for _ in range(799):
        trainer.epoch()
    return model
