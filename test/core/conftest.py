import numpy as np
import pytest
import torch

from pvrnn_ros.core.config import Config, LayerConfig, ModelConfig
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
