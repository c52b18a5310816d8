"""Unit tests (no DDS) of the parameter table rules and the /diagnostics level rules."""
from __future__ import annotations

import pytest

from pvrnn_ros.ros.diagnostics import ERROR, OK, STALE, WARN, input_health, rtf_health, tick_health
from pvrnn_ros.ros.params import Param, ParamTable, help_requested


def _table():
    return ParamTable("n", [
        Param("lr", -1.0, "learning rate", low=1e-9, high=10.0, special=(-1.0,), live=True),
        Param("mode", "a", "mode", choices=("a", "b")),
        Param("seed", 0, "seed", read_only=True),
    ], lifecycle=True)


def test_param_check_names_the_value_and_the_valid_range():
    t = _table()
    assert t.check("lr", 0.5) is None and t.check("lr", -1.0) is None  # in range; the special value
    assert t.check("lr", 0.0) == "lr=0.0 is out of range: expected in [1e-09, 10] or -1"
    assert "lr=nan" in t.check("lr", float("nan"))
    assert t.check("mode", "c") == "mode='c' is not valid: expected one of a, b"
    assert t.check_all({"lr": 20.0, "mode": "b", "other": 1}) == ["lr=20.0 is out of range: expected in [1e-09, 10] or -1"]


def test_check_change_refuses_reconfigure_parameters_while_configured():
    t = _table()
    assert t.check_change("mode", "b", configured=False) is None
    reason = t.check_change("mode", "b", configured=True)
    assert reason.startswith("mode cannot change while the node is configured") and "cleanup" in reason
    assert t.check_change("lr", 0.1, configured=True) is None  # live
    assert "out of range" in t.check_change("lr", 100.0, configured=True)
    assert t.check_change("use_sim_time", True, configured=True) is None  # not ours: rclpy decides


def test_table_rejects_duplicates_and_renders_help_and_markdown():
    with pytest.raises(ValueError, match="listed twice"):
        ParamTable("n", [Param("a", 1, "x"), Param("a", 2, "y")])
    t = _table()
    text = t.help_text("prog")
    assert "lr = -1.0  [in [1e-09, 10] or -1]  (live)" in text and "mode = 'a'  [one of a, b]  (when unconfigured)" in text
    assert "seed = 0  (at start-up)" in text
    assert "| `lr` | `-1.0` | in [1e-09, 10] or -1 | live | learning rate |" in t.markdown()
    assert help_requested(["--help"]) and help_requested(["-p", "-h"])
    assert not help_requested(["--ros-args", "-p", "x:=1", "--help"])  # ROS's own arguments are left alone


def test_tick_health_levels():
    assert tick_health([], 100.0, new_ticks=0, new_misses=0)[0] == STALE
    assert tick_health([10.0] * 5, 100.0, new_ticks=5, new_misses=0)[0] == OK
    assert tick_health([60.0] * 5, 100.0, new_ticks=5, new_misses=0)[0] == WARN  # > half the period
    level, message = tick_health([10.0] * 5, 100.0, new_ticks=5, new_misses=2)
    assert level == ERROR and "2 deadline misses" in message


def test_input_health_levels():
    assert input_health(None, 0.5, commanding=True)[0] == STALE
    assert input_health(0.1, 0.5, commanding=True)[0] == OK
    assert input_health(0.3, 0.5, commanding=True)[0] == WARN  # late
    assert input_health(0.6, 0.5, commanding=True)[0] == ERROR  # stale while commanding
    assert input_health(0.6, 0.5, commanding=False)[0] == WARN  # stale, but nothing is commanded


def test_rtf_health_levels():
    assert rtf_health(2.0, 1.0, 2.0)[:1] == (OK,) and rtf_health(2.0, 1.0, 2.0)[2] == pytest.approx(2.0)
    assert rtf_health(1.0, 1.0, 2.0)[0] == WARN
    assert rtf_health(0.0, 1.0, 1.0)[0] == STALE and rtf_health(-3.0, 1.0, 1.0)[0] == STALE
    assert rtf_health(5.0, 1.0, 0.0)[0] == OK  # as fast as possible
