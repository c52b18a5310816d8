"""The CPU kernels' own vectorisable elementary functions against numpy's, on random and edge inputs."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from pvrnn_ros.kernels import cpu  # noqa: E402


def test_log64v_is_within_one_ulp_of_libm():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random(20000), 10.0 ** rng.uniform(-30, 30, 20000),
                        [1.0, 0.5, 2.0, 1e-30, 0.7071067811865476, 0.7071067811865475, 1 - 1e-16, 1 + 2e-16]])
    y = x.copy()
    cpu._log64v(y, len(y), np.empty(len(y), np.int64))
    ref = np.log(x)
    assert y[0 + 40000] == 0.0  # log(1) exactly
    assert np.all(np.abs(y - ref) <= np.spacing(np.abs(ref)) + 1e-300)


def test_exps_and_tanh_match_numpy():
    rng = np.random.default_rng(1)
    x32 = -np.abs(rng.standard_normal(5000) * 20).astype(np.float32)
    out = np.empty_like(x32)
    cpu._expv(x32, out, np.empty(len(x32), np.int32), len(x32))
    np.testing.assert_allclose(out, np.exp(x32.astype(np.float64)), rtol=3e-7, atol=1e-37)
    x64 = rng.uniform(-700, 700, 5000)
    y64 = x64.copy()
    cpu._exp64v(y64, len(y64), np.empty(len(y64), np.int64))
    np.testing.assert_allclose(y64, np.exp(x64), rtol=4e-16)
    t = rng.uniform(-10, 10, 5000).astype(np.float32)
    assert max(abs(float(cpu._tanh32(v)) - np.tanh(float(v))) for v in t) < 4e-7
