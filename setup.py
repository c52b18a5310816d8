"""Build for both `colcon build` (ament_python) and `pip install -e '.[ros,dev]'`."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "pvrnn_ros"
NODES = ["sim_node", "demonstrator_node", "recorder_node", "er_node"]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="PV-RNN learning from demonstrations with online error regression for ROS 2",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["examples/*/*.csv", "examples/*/*.json", "examples/*/*.urdf"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/sim", glob("sim/*.xml")),
    ],
    python_requires=">=3.10",
    # torch is pinned by scripts/install.sh (CPU wheel here, CUDA wheel from PyPI on a GPU box);
    # the range below is satisfied by either and never pulls a second copy.
    install_requires=[
        "torch>=2.2",
        "numpy>=1.24",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "rosbags>=0.10",
        "mujoco>=3.1",
        "gymnasium>=1.0",
        "numba>=0.59",
        "scipy>=1.10",  # the BLAS numba's np.dot calls in the batched CPU kernels
        "threadpoolctl>=3.1",  # keeps that BLAS on one thread inside the kernels' own threads
        "mcap>=1.1",  # pvrnn-ros repair
    ],
    extras_require={
        "ros": [
            "ros-rclpy",
            "ros-sensor-msgs",
            "ros-std-msgs",
            "ros-trajectory-msgs",
            "ros-rosgraph-msgs",
            "ros-std-srvs",
            "ros-geometry-msgs",  # end-effector points, goals
            "ros-diagnostic-msgs",  # /diagnostics
            "ros-lifecycle-msgs",  # managed nodes
            "ros-rcl-interfaces",  # parameter descriptors and events
            "ros-rmw-fastrtps-cpp",
        ],
        "gpu": ["triton>=3.0"],
        "dev": ["pytest>=7", "triton>=3.0"],
        # robots nobody on the project wrote, to test "bring your own robot" against
        "robots": ["dm-control>=1.0"],
        # meta-prior / ER sweeps on a local Ray or a cluster; Optuna search optional
        "sweep": ["ray[tune]>=2.9", "optuna>=3.0"],
    },
    tests_require=["pytest"],
    zip_safe=True,
    entry_points={
        "console_scripts": [f"pvrnn-ros = {PACKAGE}.cli:main"]
        + [f"{node} = {PACKAGE}.ros.{node}:main" for node in NODES],
    },
)
