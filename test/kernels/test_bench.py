"""`pvrnn-ros bench` machinery: rows per backend next to the reference, JSON out (timings are not
asserted: they live in the benchmark, not in tests)."""
from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("numba")

from pvrnn_ros.kernels.bench import format_table, run_bench, to_json  # noqa: E402


def test_bench_quick_kernel_and_engine_cases(tmp_path):
    res = run_bench(quick=True, backends=["cpu"], only="bf", log=lambda *_: None)
    by = {(r.scenario, r.backend): r for r in res.rows}
    assert set(by) == {("b", "reference"), ("b", "cpu"), ("f", "reference"), ("f", "cpu")}
    for r in res.rows:
        assert r.n >= 2 and 0 < r.median_ms <= r.p90_ms and math.isfinite(r.p90_ms)
    for case in "bf":
        cpu, ref = by[(case, "cpu")], by[(case, "reference")]
        assert ref.speedup is None and cpu.speedup == pytest.approx(ref.median_ms / cpu.median_ms)
    table = format_table(res)
    assert "(f)  cpu" in table and "ErrorRegression.step" in table
    to_json(res, tmp_path / "bench.json")
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["compile_s"]["cpu"] >= 0
    assert [(r["scenario"], r["backend"]) for r in data["rows"]] == [(r.scenario, r.backend) for r in res.rows]
    assert data["rows"][1]["median_ms"] == by[("b", "cpu")].median_ms
