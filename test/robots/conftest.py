"""The ROS fixtures (own DDS domain per test, nodes as processes) shared with test/ros."""
from test.ros.conftest import ros, tiny_model  # noqa: F401
