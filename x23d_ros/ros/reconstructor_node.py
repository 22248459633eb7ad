"""`reconstructor`: a managed (lifecycle) node that runs the Reconstructor off the receiving thread.

Lifecycle (`rclpy.lifecycle`, services `/reconstructor/change_state`, `/get_state`, …):
- configure: load the weights (`weights`) on the device (`device`; `cuda` without CUDA fails);
  then the worker thread runs both networks once on blank shots (`Reconstructor.warm_up`),
  so the first reconstruction does not pay for their first pass (`warm_up_ms` is None
  until then; a shot set handed over meanwhile waits for it);
- activate: reconstruct the shot sets handed over, and publish (the publisher follows `on_active`);
- deactivate: stop; the publisher removes the collision objects. Shot sets handed over while
  inactive are kept (the newest) and reconstructed on the next activation;
- cleanup: free the model.
`autostart` (bringup) drives it to active at start. A shot set handed over while a
reconstruction runs waits; if several wait, only the newest (it holds every shot) is run.
`reconstruct_levels` runs the fine stage alone on the last reconstruction's shots at given
centres (the levels an operator's count exposes, `/x23d/confirm_levels`); a shot set waiting
goes first, and makes that job moot.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable

import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from x23d_ros.pipeline import Reconstruction, Reconstructor, ShotSet, ShotSetError
from x23d_ros.ros.parameters import Param, declare

PARAMS = (
    Param(
        "weights",
        "default",
        "weights file, default (the shipped weights) or fluoroscopy (the shipped weights "
        "tuned to read the style transfer's output: with style_transfer default)",
    ),
    Param("device", "auto", "auto (CUDA when present), cpu or cuda"),
    Param(
        "domain",
        "synthetic",
        "the shots' domain (the listener's, set for both in the shared block): configure "
        "fails when neither the weights nor the style transfer read it; auto: each shot set "
        "of a domain they cannot read is refused (unreadable_domain), the shots kept",
    ),
    Param(
        "style_transfer",
        "none",
        "fluoroscopy → synthetic style transfer: none (fluoroscopy-domain shots refused: the "
        "shipped one is not accurate enough for a patient, see the README), default (the "
        "shipped one), or a file",
    ),
    Param(
        "polarity",
        "auto",
        "how fluoroscopy frames show bone: auto (decided per frame), bone_bright or bone_dark "
        "(a frame that looks otherwise is refused)",
    ),
    Param(
        "orientation_estimator",
        "default",
        "what reads the patient's axes from the shots when the listener does not give them "
        "(its patient_orientation: shots): default (the shipped network), a file, or none "
        "(the poses' frame is then taken as the patient's axes)",
    ),
    Param("points_per_vertebra", 2000, "surface points per vertebra in the cloud", 10, 100000),
    Param("autostart", True, "configure and activate at start (else: drive its lifecycle)"),
    Param("threads", 0, "CPU threads the networks use; 0: torch's default (one per core)", 0, 1024),
)


#: How long a shutdown waits for a running reconstruction (1-3 s on 2 CPU cores; launch
#: escalates to SIGKILL some seconds after its SIGTERM).
WORKER_JOIN_S = 10.0


class ReconstructorNode(LifecycleNode):
    def __init__(
        self,
        on_result: Callable[[Reconstruction], None] | None = None,
        on_active: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__("reconstructor")
        self.p = declare(self, PARAMS)
        self.on_result = on_result or (lambda _: None)
        self.on_active = on_active or (lambda _: None)
        self.reconstructor: Reconstructor | None = None
        self.state = "unconfigured"
        self.active = False
        self.last: Reconstruction | None = None
        self.last_error = ""
        self.runs = 0
        self.refusals: dict[str, int] = {}  # shot sets the domain gate refused, by reason
        self.warm_up_ms: float | None = None
        self.threads = 0  # what the worker thread's networks use, once warmed up
        self._cold: Reconstructor | None = None  # configured, not yet warmed up
        self._pending: ShotSet | None = None
        self._last_shots: ShotSet | None = None  # the shot set of `last`
        # (shots, centres, then): the fine stage on those centres, its result to `then`.
        self._extra: tuple | None = None
        self._running_extra = False
        self._wake = threading.Condition()
        self._stop = False
        self._worker = threading.Thread(target=self._loop, name="reconstructor", daemon=True)
        self._worker.start()

    # -- lifecycle ------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        import torch

        try:
            if self.p.device.startswith("cuda") and not torch.cuda.is_available():
                raise RuntimeError(f"device {self.p.device!r} asked for, but CUDA is not available")
            reconstructor = Reconstructor(
                self.p.weights,
                self.p.device,
                points_per_vertebra=self.p.points_per_vertebra,
                style=None if self.p.style_transfer == "none" else self.p.style_transfer,
                polarity=self.p.polarity,
                orientation=(
                    None if self.p.orientation_estimator == "none" else self.p.orientation_estimator
                ),
            )
            readable = {reconstructor.domain}
            if reconstructor.style is not None:
                readable.add(reconstructor.style.from_domain)
            if self.p.domain not in (*readable, "auto"):
                raise ValueError(
                    f"the shots are {self.p.domain}-domain, but the weights read "
                    f"{reconstructor.domain} shots and no style transfer is enabled "
                    "(style_transfer: default, or weights from x23d adapt)"
                )
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            self.last_error = f"configure: {error}"
            self.get_logger().error(f"cannot load the model: {error}")
            return TransitionCallbackReturn.FAILURE
        self.last_error = ""
        self.state = "inactive"
        with self._wake:
            self.reconstructor = self._cold = reconstructor
            self.warm_up_ms = None
            self._wake.notify()
        style = reconstructor.style
        self.get_logger().info(
            f"weights {reconstructor.weights_path} "
            f"(sha256 {reconstructor.weights_sha256[:12]}) on {reconstructor.device}; "
            + (
                f"style transfer {style.path} (sha256 {reconstructor.style_sha256[:12]})"
                if style
                else "no style transfer"
            )
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.on_active(True)
        with self._wake:
            self.active = True
            self.state = "active"
            self._wake.notify()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._wake:
            self.active = False
            self.state = "inactive"
        self.on_active(False)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._wake:
            self.reconstructor = self._cold = None  # the worker holds it only while it works
            self.warm_up_ms = None
        self.state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.active:
            self.on_active(False)
        self.active = False
        self.reconstructor = self._cold = None
        self.state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def start(self) -> bool:
        """configure + activate (autostart); False when a transition failed."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    # -- work -----------------------------------------------------------------------------
    def submit(self, shot_set: ShotSet) -> None:
        """Queue `shot_set` (replacing any set still waiting) and return at once."""
        with self._wake:
            self._pending = shot_set
            if not self.active:
                self.get_logger().info(
                    f"{self.state}: {len(shot_set.shots)} shots kept, reconstructed on activation"
                )
            self._wake.notify()

    def reconstruct_levels(
        self,
        identity: str,
        centres: dict[str, np.ndarray],
        then: Callable[[Reconstruction], None],
    ) -> bool:
        """Queue the fine stage alone at `centres` (level → mm, the poses' frame) on the shots
        of the last reconstruction, if that is `identity` (`Reconstruction.identity`), and
        return at once; the worker hands the result to `then`. False (nothing queued) when
        the last reconstruction is another, or there is none."""
        with self._wake:
            if self.last is None or self.last.identity != identity or self._last_shots is None:
                return False
            self._extra = (self._last_shots, dict(centres), then)
            self._wake.notify()
        return True

    def cancel(self, session: str) -> None:
        """A new session began: drop a waiting shot set of any other session (one already
        running finishes; the publisher refuses its result)."""
        with self._wake:
            pending = self._pending
            self.last = None  # diagnostics: nothing of the old session is published
            self._last_shots = self._extra = None
            if pending is not None and pending.session != session:
                self._pending = None
                self.get_logger().info(
                    f"session {session}: the waiting shot set of session "
                    f"{pending.session or '(none)'} dropped"
                )

    def busy(self) -> bool:
        return self.active and (
            self._pending is not None or self._extra is not None or self._running_extra
        )

    def _warm_up(self, reconstructor: Reconstructor) -> None:
        import torch

        if self.p.threads:  # on this thread: OpenMP keeps a thread count per calling thread
            torch.set_num_threads(self.p.threads)
        self.threads = torch.get_num_threads()
        try:
            ms = reconstructor.warm_up()
        except Exception as error:  # e.g. out of memory: say so, and keep the worker alive
            self.last_error = f"warm-up: {error}"
            self.get_logger().error(f"warm-up failed: {traceback.format_exc()}")
            ms = float("nan")
        else:
            self.get_logger().info(f"warmed up in {ms:.0f} ms")
        with self._wake:
            if self._cold is None and self.reconstructor is reconstructor:
                self.warm_up_ms = ms

    def _loop(self) -> None:
        while True:
            with self._wake:
                while (
                    not self._stop
                    and self._cold is None
                    and ((self._pending is None and self._extra is None) or not self.active)
                ):
                    self._wake.wait()
                if self._stop:
                    return
                cold, self._cold = self._cold, None
                shot_set, reconstructor = self._pending, self.reconstructor
                extra = None
                if cold is None:
                    extra, self._extra = self._extra, None
                    if shot_set is not None:  # a new shot set makes a job on the old one's moot
                        extra = None
                    self._running_extra = extra is not None  # busy() until it is published
            if cold is not None:
                self._warm_up(cold)
                continue
            if extra is not None:
                try:
                    self._run_extra(reconstructor, *extra)
                finally:
                    self._running_extra = False
                continue
            try:
                recon = reconstructor.reconstruct(shot_set)
            except ShotSetError as error:
                self.last_error = str(error)
                reason = getattr(error, "reason", None)  # the domain gate's (GateRefusedError)
                if reason:
                    self.refusals[reason] = self.refusals.get(reason, 0) + 1
                self.get_logger().error(f"cannot reconstruct: {error}")
            except Exception as error:  # a fault of ours: report it, keep the worker and shots
                self.last_error = f"reconstruction failed: {error!r}"
                self.get_logger().error(f"reconstruction failed: {traceback.format_exc()}")
            else:
                self.runs += 1
                with self._wake:
                    self.last, self._last_shots = recon, shot_set
                timings = ", ".join(f"{k} {v:.0f} ms" for k, v in recon.timings_ms.items())
                self.get_logger().info(
                    f"{len(recon.vertebrae)} vertebrae from {recon.views} shots; {timings}"
                    + (f"; not found: {', '.join(recon.missing)}" if recon.missing else "")
                )
                for note in recon.notes:
                    self.get_logger().warning(note)
                if recon.orientation == "reference":  # the listener gives the axes, or asks
                    self.get_logger().warning(  # for them to be read from the shots
                        "the shots came without the patient's axes (the listener's "
                        "patient_orientation: shots), and this node has no orientation "
                        "estimator (orientation_estimator: none, or its file missing): "
                        "reference_frame was taken as the patient's axes"
                    )
                try:
                    self.on_result(recon)
                except Exception as error:  # publishing failed: say so, keep the worker
                    self.last_error = f"publishing failed: {error!r}"
                    self.get_logger().error(f"publishing failed: {traceback.format_exc()}")
            with self._wake:
                if self._pending is shot_set:
                    self._pending = None

    def _run_extra(
        self,
        reconstructor: Reconstructor,
        shots: ShotSet,
        centres: dict[str, np.ndarray],
        then: Callable[[Reconstruction], None],
    ) -> None:
        """`reconstruct_levels`' job, on the worker thread (`judge_given`: a level no shot
        shows half of is refused)."""
        try:
            recon = reconstructor.reconstruct(shots, centres=centres, judge_given=True)
        except ShotSetError as error:  # the gate refused the set with these levels
            self.get_logger().warning(f"levels at given centres not reconstructed: {error}")
            return
        except Exception as error:  # the shots were read once: a fault of ours; keep going
            self.last_error = f"reconstructing {', '.join(centres)}: {error!r}"
            self.get_logger().error(f"reconstructing levels failed: {traceback.format_exc()}")
            return
        self.get_logger().info(
            f"{', '.join(recon.vertebrae) or 'nothing'} reconstructed at given centres "
            f"({', '.join(centres)} asked)"
        )
        try:
            then(recon)
        except Exception as error:
            self.last_error = f"publishing failed: {error!r}"
            self.get_logger().error(f"publishing failed: {traceback.format_exc()}")

    def destroy_node(self) -> None:
        """Stop the worker, letting a reconstruction that runs finish (its result is not
        published: the publisher has withdrawn by then), so the interpreter never exits under
        a thread inside torch (which aborts the process)."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._worker is not threading.current_thread():
            self._worker.join(timeout=WORKER_JOIN_S)
        super().destroy_node()
