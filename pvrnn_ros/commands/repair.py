"""pvrnn-ros repair: rebuild rosbag2/MCAP episodes cut by a crash (no footer, no metadata.yaml)."""
from __future__ import annotations

HELP = "make rosbag2 recordings cut by a crash readable again"
DESCRIPTION = (
    "A recording killed mid-run (SIGKILL, power loss) holds every MCAP chunk flushed before the crash "
    "but no summary and no metadata.yaml. This keeps the intact messages, rewrites the episode as a "
    "complete bag that `pvrnn-ros train` and `ros2 bag play` read, and keeps the damaged file as "
    "*.mcap.damaged."
)


def add_arguments(p):
    p.add_argument("paths", nargs="+", metavar="DIR", help="episode directories, or directories of them")


def run(args) -> int:
    from pvrnn_ros.ros.bag_repair import main

    return main(args.paths)
