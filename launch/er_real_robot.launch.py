"""ros2 launch pvrnn_ros er_real_robot.launch.py  (same graph as `pvrnn-ros up er_real_robot`).

Nodes and params files come from pvrnn_ros.bringup.GRAPHS["er_real_robot"]; the params live in
share/pvrnn_ros/config/. Give a node another params file with <node_name>_params:=PATH.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pvrnn_ros.bringup import GRAPHS

GRAPH = "er_real_robot"


def generate_launch_description():
    share = get_package_share_directory("pvrnn_ros")
    actions = []
    for spec in GRAPHS[GRAPH]:
        arg = f"{spec.name}_params"
        actions.append(DeclareLaunchArgument(arg, default_value=os.path.join(share, "config", spec.params),
                                             description=f"params file of {spec.name}"))
        actions.append(Node(package="pvrnn_ros", executable=spec.executable, name=spec.name, output="screen",
                            emulate_tty=True, parameters=[LaunchConfiguration(arg)]))
    return LaunchDescription(actions)
