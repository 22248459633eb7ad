"""The one `main()` skeleton every executable of the package shares (ros2/examples style)."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.task import Future


class FiniteNode(Node):
    """A node that may finish by itself: it sets `exit_code` and completes `done`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.done = Future()
        self.exit_code = 0

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code
        if not self.done.done():
            self.done.set_result(exit_code)


def run_node(make_node: Callable[[], FiniteNode], args: list[str] | None = None) -> int:
    """rclpy.init, build the node, spin until it finishes or Ctrl-C; return its exit code."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        rclpy.spin_until_future_complete(node, node.done)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return node.exit_code if node is not None else 1
