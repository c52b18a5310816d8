"""ros2 launch pvrnn_ros imitate.launch.py: sim + demonstrator + ER node imitating (the learner arm follows its prediction of the teacher).

The same graph as `pvrnn-ros up imitate`: nodes and params files come from
pvrnn_ros.bringup.GRAPHS["imitate"], the params from share/pvrnn_ros/config/. Give a node another
params file with <node_name>_params:=PATH.
"""
from pvrnn_ros.bringup import launch_description

GRAPH = "imitate"


def generate_launch_description():
    return launch_description(GRAPH)
