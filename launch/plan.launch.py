"""ros2 launch pvrnn_ros plan.launch.py: sim + ER node in mode plan (the arm is driven towards the goal
published on pvrnn/goal/joints, pvrnn/goal/end_effector or pvrnn/goal/task).

The same graph as `pvrnn-ros up plan`: nodes and params files come from pvrnn_ros.bringup.GRAPHS["plan"],
the params from share/pvrnn_ros/config/. Give a node another params file with <node_name>_params:=PATH.
"""
from pvrnn_ros.bringup import launch_description

GRAPH = "plan"


def generate_launch_description():
    return launch_description(GRAPH)
