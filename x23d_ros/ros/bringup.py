"""`bringup`: the one process that composes carm_listener, reconstructor and spine_publisher.

shared/DESIGN.md §1: the three nodes share a MultiThreadedExecutor in one process, so images are
not serialised twice and the model is loaded once. The nodes themselves are issue #5's work;
until they exist this executable refuses to start, loudly, rather than pretend to run.
"""

from __future__ import annotations

import sys

NOT_YET = (
    "x23d_ros bringup: the carm_listener, reconstructor and spine_publisher nodes are not "
    "implemented yet (tracked in issue #5), so there is nothing to launch. "
    "`x23d-ros check-transport` verifies the ROS 2 set-up in the meantime."
)


def main(args: list[str] | None = None) -> int:
    print(NOT_YET, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
