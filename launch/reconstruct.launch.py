"""Start the x23d_ros reconstruction process on a full ROS 2 install.

    ros2 launch x23d_ros reconstruct.launch.py [config:=/path/to/params.yaml]
        [weights:=/path/to/weights.pt] [sim:=true]

One process (`bringup`) composes the three nodes (shared/DESIGN.md §1); it reads the same YAML
that `x23d-ros launch` reads where `ros2 launch` is absent. The reconstructor is a lifecycle
node; with `autostart: true` (the YAML's default) bringup configures and activates it itself,
so no lifecycle manager is needed; with `autostart: false`, drive it with
`ros2 lifecycle set /reconstructor configure` and `activate`. `sim:=true` also starts the
simulated C-arm (`sim_carm`), which publishes three shots of a procedural spine.
"""

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
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
            DeclareLaunchArgument(
                "weights", default_value="default", description="weights file, or default"
            ),
            DeclareLaunchArgument(
                "sim", default_value="false", description="also start the simulated C-arm"
            ),
            Node(
                package="x23d_ros",
                executable="bringup",
                parameters=[
                    LaunchConfiguration("config"),
                    {"weights": LaunchConfiguration("weights")},
                ],
                output="screen",
                emulate_tty=True,
            ),
            Node(
                package="x23d_ros",
                executable="sim_carm",
                parameters=[LaunchConfiguration("config")],
                output="screen",
                condition=IfCondition(LaunchConfiguration("sim")),
            ),
        ]
    )
