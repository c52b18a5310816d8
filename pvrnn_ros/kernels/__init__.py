"""ER window backends behind one interface: `backend.regress(problem, a_mu, a_ls, adam) -> WindowResult`.

`reference` is autograd (ground truth); `cpu` and `triton` are fused fast paths loaded lazily so
importing this package never imports numba or triton."""
from __future__ import annotations

import logging

log = logging.getLogger("pvrnn_ros.kernels")

BACKENDS = ("reference", "cpu", "triton")


def available_backends() -> list[str]:
    found = ["reference"]
    try:
        from . import cpu  # noqa: F401

        found.append("cpu")
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            from . import triton_er  # noqa: F401

            found.append("triton")
    except ImportError:
        pass
    return found


def get_backend(name: str, model=None):
    """Instantiate a backend by name; `auto` picks the fastest available and logs which."""
    if name == "auto":
        device_is_cuda = model is not None and model.inv_tau.is_cuda
        avail = available_backends()
        choice = "triton" if device_is_cuda and "triton" in avail else ("cpu" if "cpu" in avail and not device_is_cuda else "reference")
        log.info("ER backend auto -> %s (available: %s)", choice, ", ".join(avail))
        name = choice
    if name == "reference":
        from .reference import ReferenceBackend

        return ReferenceBackend()
    if name == "cpu":
        from .cpu import CpuBackend

        return CpuBackend()
    if name == "triton":
        from .triton_er import TritonBackend

        return TritonBackend()
    raise ValueError(f"er.backend = {name!r} is invalid: expected one of auto, {', '.join(BACKENDS)}")
