"""`reconstructor`: runs the Reconstructor on each shot set, off the receiving thread.

The model is loaded once (`weights`, `device`). A shot set handed over while a reconstruction
runs waits; if several wait, only the newest (it holds every shot) is run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rclpy.node import Node

from x23d_ros.pipeline import Reconstruction, Reconstructor, ShotSet, ShotSetError
from x23d_ros.ros.parameters import Param, declare

PARAMS = (
    Param("weights", "default", "weights file, or default (the shipped weights)"),
    Param("device", "auto", "auto (CUDA when present), cpu or cuda"),
    Param("points_per_vertebra", 2000, "surface points per vertebra in the cloud", 10, 100000),
)


class ReconstructorNode(Node):
    def __init__(self, on_result: Callable[[Reconstruction], None] | None = None) -> None:
        super().__init__("reconstructor")
        self.p = declare(self, PARAMS)
        self.on_result = on_result or (lambda _: None)
        self.reconstructor = Reconstructor(
            self.p.weights, self.p.device, points_per_vertebra=self.p.points_per_vertebra
        )
        self.get_logger().info(
            f"weights {self.reconstructor.weights_path} "
            f"(sha256 {self.reconstructor.weights_sha256[:12]}) on {self.reconstructor.device}"
        )
        self.last: Reconstruction | None = None
        self.last_error = ""
        self.runs = 0
        self._pending: ShotSet | None = None
        self._wake = threading.Condition()
        self._stop = False
        self._worker = threading.Thread(target=self._loop, name="reconstructor", daemon=True)
        self._worker.start()

    def submit(self, shot_set: ShotSet) -> None:
        """Queue `shot_set` (replacing any set still waiting) and return at once."""
        with self._wake:
            self._pending = shot_set
            self._wake.notify()

    def busy(self) -> bool:
        return self._pending is not None

    def _loop(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                shot_set = self._pending
            try:
                recon = self.reconstructor.reconstruct(shot_set)
            except ShotSetError as error:
                self.last_error = str(error)
                self.get_logger().error(f"cannot reconstruct: {error}")
            else:
                self.runs += 1
                self.last = recon
                timings = ", ".join(f"{k} {v:.0f} ms" for k, v in recon.timings_ms.items())
                self.get_logger().info(
                    f"{len(recon.vertebrae)} vertebrae from {recon.views} shots; {timings}"
                    + (f"; not found: {', '.join(recon.missing)}" if recon.missing else "")
                )
                self.on_result(recon)
            with self._wake:
                if self._pending is shot_set:
                    self._pending = None

    def destroy_node(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        super().destroy_node()
