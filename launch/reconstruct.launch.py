"""Start the x23d_ros reconstruction process on a full ROS 2 install.

    ros2 launch x23d_ros reconstruct.launch.py [config:=/path/to/params.yaml]

One process (`bringup`) composes the three nodes (shared/DESIGN.md §1); it reads the same YAML
that `x23d-ros launch` reads where `ros2 launch` is absent.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    default_config = PathJoinSubstitution(
        [FindPackageShare("x23d_ros"), "config", "reconstruct.yaml"]
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config", default_value=default_config, description="parameter YAML of the process"
            ),
            Node(
                package="x23d_ros",
                executable="bringup",
                parameters=[LaunchConfiguration("config")],
                output="screen",
                emulate_tty=True,
            ),
        ]
    )
