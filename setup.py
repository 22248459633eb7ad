"""The ament_python package: `colcon build` (full ROS 2) and `pip install -e .` both use it."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "x23d_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={
        PACKAGE: [
            "weights/*.pt",
            "weights/*.md",
            "weights/*.json",
            "data/demo_bag/*",
            "data/demo_bag_fluoroscopy/*",
            "anatomy/shapes/*.npz",
            "anatomy/shapes/*.md",
            "anatomy/shapes/licenses/*",
        ]
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="x23d_ros maintainers",
    maintainer_email="maintainers@users.noreply.b-seed-094f41b6.example",
    description="Lumbar spine 3D reconstruction from posed C-arm shots, for ROS 2 robot planners.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            # ROS executables, one per node, named after it (ros2 run x23d_ros <name>).
            "bringup = x23d_ros.ros.bringup:main",
            "image_publisher = x23d_ros.ros.image_publisher:main",
            "image_probe = x23d_ros.ros.image_probe:main",
            "sim_carm = x23d_ros.ros.sim_carm:main",
            # Command-line tools.
            "x23d = x23d_ros.cli:main",
            "x23d-ros = x23d_ros.ros.cli:main",
        ],
    },
)
