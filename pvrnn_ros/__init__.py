"""pvrnn_ros: PV-RNN learning from demonstrations with online error regression for ROS 2."""

__version__ = "0.1.0"
