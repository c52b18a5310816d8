import subprocess
import sys


def test_core_imports_no_ros_mujoco_or_triton():
    code = (
        "import sys\n"
        "import pvrnn_ros.core, pvrnn_ros.core.model, pvrnn_ros.core.train, pvrnn_ros.core.er, "
        "pvrnn_ros.core.data, pvrnn_ros.core.generate, pvrnn_ros.core.checkpoint, pvrnn_ros.core.online_plan\n"
        "bad = [m for m in ('rclpy', 'mujoco', 'triton') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
