"""sim_node on /diagnostics: the measured real-time factor, stamped with sim time under use_sim_time."""
from __future__ import annotations

import time

from .clients import statuses


def test_sim_reports_real_time_factor_in_sim_time(ros):
    from diagnostic_msgs.msg import DiagnosticArray
    from rosgraph_msgs.msg import Clock

    procs, probe, _ = ros
    probe.subscribe(DiagnosticArray, "/diagnostics")
    probe.subscribe(Clock, "/clock", depth=10)
    sim = procs.start("sim_node", "scene:=arm7", "robots:=['']", "real_time_factor:=2.0", "use_sim_time:=true")
    probe.wait_for(lambda: len(statuses(probe, "sim_node: simulation")) >= 3, 40, "3 simulation reports")
    _, level, message, values = statuses(probe, "sim_node: simulation")[-1]
    rtf = float(values["real-time factor"])
    assert values["requested real-time factor"] == "2"
    assert 0.5 < rtf < 2.6, values  # loose: the machine is shared; the level must agree with the figure
    assert level == ("WARN" if rtf < 1.8 else "OK"), (level, message, rtf)
    # the array's stamp is the node clock = sim time (from its own /clock), not wall time
    arr = [m for _, m in probe.messages("/diagnostics")
           if any(s.name == "sim_node: simulation" for s in m.status)][-1]
    stamp = arr.header.stamp.sec + 1e-9 * arr.header.stamp.nanosec
    assert 0.0 < stamp < 600.0 and abs(stamp - time.time()) > 1e6, stamp
    assert sim.poll() is None
