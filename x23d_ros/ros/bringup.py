"""`bringup`: the one process that composes carm_listener, reconstructor and spine_publisher.

shared/DESIGN.md §1: the three nodes share a MultiThreadedExecutor in one process, so images
are not serialised twice and the model is loaded once. Shots go from the listener to the
reconstructor as Python objects; the reconstruction runs on the reconstructor's own thread,
so the listener keeps receiving; its result goes to the publisher.
"""

from __future__ import annotations

import signal
import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from x23d_ros.ros.carm_listener import CArmListener
from x23d_ros.ros.reconstructor_node import ReconstructorNode
from x23d_ros.ros.spine_publisher import SpinePublisher

#: How long a clean shutdown waits, at most, for reliable subscribers (MoveIt's planning
#: scene) to acknowledge the REMOVEs before the publisher's endpoint disappears.
SHUTDOWN_FLUSH_S = 2.0


class Pipeline:
    """The three nodes, wired."""

    def __init__(self) -> None:
        self.publisher = SpinePublisher(status=self.status)
        self.reconstructor = ReconstructorNode(
            on_result=self.publisher.publish, on_active=self.publisher.set_active
        )
        # The levels an operator's count exposes are reconstructed on the same worker.
        self.publisher.reconstruct_levels = self.reconstructor.reconstruct_levels
        self.listener = CArmListener(on_shot_set=self.reconstructor.submit, on_reset=self.reset)
        self.publisher.set_session(self.listener.session.id)
        # The operator's count is kept with the session: a restart publishes the same spine
        # as counted (the reconstructor starts below, so before the resumed spine goes out).
        self.publisher.stored = self.listener.session.level_confirmation()
        self.publisher.on_confirmed = lambda identity, shift, names: (
            self.listener.session.record_confirmation(identity, shift, names)
        )
        self.nodes = (self.listener, self.reconstructor, self.publisher)
        if self.reconstructor.p.autostart and not self.reconstructor.start():
            self.reconstructor.get_logger().error(
                "autostart failed; the reconstructor stays inactive (see last_error in diagnostics)"
            )

    def reset(self, session: str) -> None:
        """A new session: the reconstructor drops the old one's waiting shot set, and the
        publisher withdraws its spine and refuses any of its reconstructions still running."""
        self.reconstructor.cancel(session)
        self.publisher.withdraw("reset", session=session)

    def status(self) -> dict[str, str]:
        r = self.reconstructor
        if not r.active:
            state = r.state
        elif r.warm_up_ms is None:
            state = "warming up"
        elif r.busy():
            state = "reconstructing"
        else:
            state = "published" if r.last is not None else "collecting shots"
        model = r.reconstructor
        values = {
            "state": state,
            "lifecycle": r.state,
            "shots_collected": str(len(self.listener.session)),
            "images_received": str(self.listener.images_received),
            "session": self.listener.session.folder.name,
            "device": str(model.device) if model else "",
            "weights_sha256": model.weights_sha256[:16] if model else "",
            "style_transfer": (model.style_sha256[:16] or "none") if model else "",
            "reconstructions": str(r.runs),
            "warm_up_ms": "" if r.warm_up_ms is None else f"{r.warm_up_ms:.0f}",
            "threads": str(r.threads) if r.threads else "",
            "last_error": r.last_error,
        }
        for reason, count in sorted(self.listener.rejections.items()):
            values[f"rejected.{reason}"] = str(count)
        for reason, count in sorted(r.refusals.items()):
            values[f"gate_refused.{reason}"] = str(count)
        for topic, count in sorted(self.listener.incompatible_qos.items()):
            values[f"incompatible_qos.{topic}"] = str(count)
        if r.last is not None:
            for stage, ms in r.last.timings_ms.items():
                values[f"latency_ms.{stage}"] = f"{ms:.1f}"
            published = self.publisher.current  # the operator's names once confirmed
            values["levels"] = ",".join((published or r.last).vertebrae)
            values["adaptation"] = r.last.adaptation or "none"
            values["patient_orientation"] = r.last.orientation
            values["count_landmarks"] = r.last.count_landmarks
        return values

    def destroy(self) -> None:
        """A clean shutdown: take the spine back from planners (REMOVE the collision objects,
        drop the vertebra frames, an empty cloud) and give DDS a moment to deliver that before
        the nodes go."""
        try:
            self.publisher.withdraw("shutdown", deactivate=True)  # nothing published after
            self.publisher.flush(SHUTDOWN_FLUSH_S)
        except Exception as error:  # a context already shut down: nothing more can be sent
            self.publisher.get_logger().error(f"shutdown: the spine was not withdrawn: {error!r}")
        for node in self.nodes:
            node.destroy_node()


#: Set by SIGINT / SIGTERM: the spin loop ends at its next turn. A flag, not an exception
#: raised wherever the main thread happens to be (inside the executor's own bookkeeping, an
#: exception can leave it in a state that the shutdown then waits on).
_STOP = threading.Event()


def _interrupt(signum, frame) -> None:
    _STOP.set()


def main(args: list[str] | None = None) -> int:
    # Ctrl-C and SIGTERM (what `ros2 launch` sends) reach Python, not rclpy's handler, which
    # would shut the context down first: the spine must still be withdrawn over it.
    _STOP.clear()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    pipeline = None
    try:
        pipeline = Pipeline()
        executor = MultiThreadedExecutor()
        for node in pipeline.nodes:
            executor.add_node(node)
        while rclpy.ok() and not _STOP.is_set():
            executor.spin_once(timeout_sec=0.2)  # back in Python often enough for a signal
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # A second Ctrl-C, or launch's SIGTERM after its timeout, must not cut the withdrawal
        # (some REMOVEs sent, some not) nor the wait for a running reconstruction.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if pipeline is not None:
            pipeline.destroy()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
