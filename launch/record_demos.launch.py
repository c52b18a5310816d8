"""ros2 launch pvrnn_ros record_demos.launch.py: sim + demonstrator + rosbag2 recorder.

The same graph as `pvrnn-ros up record_demos`: nodes and params files come from
pvrnn_ros.bringup.GRAPHS["record_demos"], the params from share/pvrnn_ros/config/. Give a node another
params file with <node_name>_params:=PATH.
"""
from pvrnn_ros.bringup import launch_description

GRAPH = "record_demos"


def generate_launch_description():
    return launch_description(GRAPH)
