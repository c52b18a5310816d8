"""Helpers shared by the CLI verbs."""
from __future__ import annotations

import argparse
from pathlib import Path

from pvrnn_ros.core.config import Config, ConfigError


def load_config(path: str | None) -> Config:
    return Config.load(path) if path else Config()


def fail(message: str) -> int:
    """Print a one-line error the way argparse does and return the exit status."""
    import sys

    print(f"pvrnn-ros: error: {message}", file=sys.stderr)
    return 2


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML config (see config/pvrnn.yaml); default: the built-in defaults")


def out_dir(path: str) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def show_progress(no_progress: bool = False) -> bool:
    """Progress bars only on a terminal: tqdm writes to stderr, and bars in a log file are noise."""
    import sys

    return not no_progress and sys.stderr.isatty()


__all__ = ["load_config", "fail", "add_config_argument", "out_dir", "show_progress", "ConfigError"]
