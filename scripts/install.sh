#!/usr/bin/env bash
# Create .venv and install pvrnn_ros with the ROS 2 wheels and test tools.
# torch is pinned first: on machines with the local CPU wheel this takes it; on a plain
# PyPI machine it takes PyPI's default (CUDA) build. Override with PVRNN_TORCH="torch==X".
# The test extras (robots: dm-control models; sweep: Ray Tune, Optuna) come with it; a lighter
# install: PVRNN_EXTRAS='.[ros]'.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${PVRNN_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e "${PVRNN_EXTRAS:-.[ros,dev,robots,sweep]}"
# compile the CPU kernels now, so a new process's first ER tick loads them from numba's cache
.venv/bin/python -m pvrnn_ros.kernels.precompile
echo "installed: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
