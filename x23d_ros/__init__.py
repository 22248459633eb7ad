"""x23d_ros: lumbar spine reconstruction from posed C-arm shots, for ROS 2 robot planners.

The package has two layers (shared/DESIGN.md §2). The core (every module outside
`x23d_ros.ros`) knows nothing of ROS: it runs in training jobs, notebooks and on a GPU machine
without rclpy. `x23d_ros.ros` holds the nodes and the message conversions; it imports the core,
never the other way round.
"""

from __future__ import annotations

__version__ = "0.1.0"
