"""ros2 launch pvrnn_ros er_real_robot.launch.py: the ER node alone beside a real robot.

The same graph as `pvrnn-ros up er_real_robot`: nodes and params files come from
pvrnn_ros.bringup.GRAPHS["er_real_robot"], the params from share/pvrnn_ros/config/. Give a node another
params file with <node_name>_params:=PATH.
"""
from pvrnn_ros.bringup import launch_description

GRAPH = "er_real_robot"


def generate_launch_description():
    return launch_description(GRAPH)
