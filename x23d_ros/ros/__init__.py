"""The ROS 2 layer: nodes, message ⇄ numpy conversion, QoS, bringup (shared/DESIGN.md §2).

Nothing in the core imports this package; it is the only place that imports rclpy.
"""
