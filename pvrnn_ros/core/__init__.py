"""Pure-PyTorch PV-RNN core: config, model, data, training, error regression.

Importing this package must not import rclpy, mujoco or triton.
"""
from .config import Config, ConfigError, DataConfig, ERConfig, LayerConfig, ModelConfig, TrainConfig

__all__ = ["Config", "ConfigError", "DataConfig", "ERConfig", "LayerConfig", "ModelConfig", "TrainConfig"]
