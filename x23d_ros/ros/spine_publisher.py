"""`spine_publisher`: the reconstructed spine on the topics planners read, and diagnostics.

Everything is latched (reliable, transient local), so a planner that starts later still gets
the spine, in `reference_frame`, in metres:
- `/collision_object`: a moveit_msgs/CollisionObject per vertebra (`<object_id_prefix>L1` …,
  mesh + `body_centre` subframe); the mesh decimated to `collision_max_triangles` and grown
  outwards by `collision_padding_mm` (under-segmentation is the unsafe direction). MoveIt
  subscribes *volatile*, so the objects are also re-sent whenever a new subscriber matches.
  Levels no longer found, `/x23d/reset`, the reconstructor's deactivation and a clean
  shutdown send REMOVE.
- `/tf_static`: one TFMessage with every static frame of this package (the optional
  registration `registration_parent → reference_frame`, and a frame per vertebra), re-sent whole
  when it changes, as tf2's static broadcaster does.
- points, markers, one shape_msgs/Mesh per level, and the vertebra frames as a PoseArray.
  The meshes, markers and collision objects go out as CDR written from their arrays (`cdr`),
  where rclpy reads that back as the messages (checked at start; `mesh_encoding` in
  diagnostics).
- `/x23d/session` (latched diagnostic_msgs/DiagnosticArray): which session, which shots (their
  acquisition stamps, and `imaged_at`: the newest) and which weights the published spine comes
  from, or that the current session has nothing published yet; and `count_landmarks`, whether
  the shots show bone where the sacrum or T12 should be (`x23d_ros.landmarks`): with neither,
  the status is WARN and says to confirm the level (with one, it is no proof of the count);
  `reconstruction` (the spine's identity), and whether an operator confirmed its levels.
- `/x23d/confirm_levels` (x23d_interfaces/srv/ConfirmLevels): the operator's count of the
  published spine. It names the spine (`reconstruction` from `/x23d/session`: any other is
  refused) and by how many levels the networks' names are off (0: confirmed as they are);
  the spine goes out again under the counted names (collision object ids, frames, mesh
  topics), a level that leaves L1–L5 withdrawn, and `/x23d/session` says `levels_confirmed`.
  A lumbar level that the shift exposes (their "T12" is L1 after +1; their "sacrum" is L5
  after -1) is reconstructed where the count puts it (the fine stage alone, one level step
  beyond the found levels: `reconstruct_levels`) and the spine goes out once more with it.
  A new reconstruction, a reset or a new session publishes unconfirmed names again; the count
  is kept with the session (bringup: `on_confirmed`, `stored`), so the same spine published
  again (a restart, `/x23d/reconstruct` without a new shot, a reactivation) with the same
  names is published as counted again. Without
  the x23d_interfaces package (a full ROS 2 install that did not build it) there is no
  service, and diagnostics say `level_confirmation: unavailable`.
Outputs are stamped with the time they are published: the spine is fixed in
`reference_frame` (a reference array on the patient), so a planner must look up
`robot_base → reference_frame` at the latest time, not at the acquisition time (with a
tracker on dynamic /tf that would be the patient's old position, and older than tf2's cache).
When the anatomy was imaged is in `/x23d/session`. Only the current session's
spine is published: a reconstruction that finishes after `/x23d/reset` (or any new session)
is dropped with a log line (`set_session`).
Diagnostics (1 Hz) say the state, the shots collected, the rejections by reason, incompatible
QoS, the last latency per stage, the device and the weights.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray
from moveit_msgs.msg import CollisionObject
from rclpy.event_handler import PublisherEventCallbacks, QoSPublisherMatchedInfo
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from shape_msgs.msg import Mesh
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from x23d_ros import __version__
from x23d_ros.anatomy import LEVELS
from x23d_ros.pipeline import (
    NO_LANDMARK_NOTE,
    Reconstruction,
    describe_shift,
    exposed_job,
    levels_exposed,
)
from x23d_ros.ros import cdr
from x23d_ros.ros import planner_scene as ps
from x23d_ros.ros import spine_messages as sm
from x23d_ros.ros.parameters import Param, declare

PARAMS = (
    Param("reference_frame", "patient_ref", "frame the spine is published in"),
    Param("topic_prefix", "/x23d/spine", "prefix of the output topics"),
    Param("diagnostics_period_s", 1.0, "seconds between diagnostics", 0.05, 60.0),
    Param("collision_object_topic", "/collision_object", "MoveIt collision objects; empty: off"),
    Param("object_id_prefix", "", "collision object ids and TF frames are <prefix>L1 … <prefix>L5"),
    Param(
        "collision_padding_mm",
        2.0,
        "collision meshes grown outwards by this much (checked at their vertices, -0.25 mm)",
        0.0,
        20.0,
    ),
    Param(
        "collision_max_triangles",
        2000,
        "collision meshes decimated to at most this many triangles a vertebra; 0: not",
        0,
        1000000,
    ),
    Param("publish_tf", True, "vertebra frames (and the registration) on /tf_static"),
    Param(
        "registration_parent", "", "static parent of reference_frame (e.g. robot_base); empty: none"
    ),
    Param("registration_translation_m", [0.0, 0.0, 0.0], "reference_frame's origin in the parent"),
    Param("registration_rotation_xyzw", [0.0, 0.0, 0.0, 1.0], "its rotation, a unit quaternion"),
)
LATCHED = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Depth ≥ twice the objects: a late transient-local subscriber replays ADDs then their REMOVEs.
COLLISION_QOS = QoSProfile(
    depth=2 * len(LEVELS),
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
TF_STATIC_QOS = LATCHED  # what tf2_ros.StaticTransformBroadcaster offers
SESSION_TOPIC = "/x23d/session"
CONFIRM_SERVICE = "/x23d/confirm_levels"


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (and on again after, if it was).

    A publish that builds the meshes as message objects (where `cdr.check` fails) builds
    about 60 000 of them (five meshes, measured with the meshes of then, half today's size);
    the collector, triggered by that many allocations, scanned them over and over and doubled
    the time to publish (measured: 0.4–0.7 s with it, 0.23–0.30 s without). Messages hold no
    reference cycles, so nothing is left for it to collect later.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class SpinePublisher(Node):
    def __init__(self, status: Callable[[], dict[str, str]] | None = None, context=None) -> None:
        super().__init__("spine_publisher", context=context)
        self.p = declare(self, PARAMS)
        self.status = status or dict
        prefix = self.p.topic_prefix.rstrip("/")
        self.points = self.create_publisher(PointCloud2, f"{prefix}/points", LATCHED)
        self.markers = self.create_publisher(MarkerArray, f"{prefix}/markers", LATCHED)
        self.frames = self.create_publisher(PoseArray, f"{prefix}/frames", LATCHED)
        self.meshes = {
            name: self.create_publisher(Mesh, f"{prefix}/{name}/mesh", LATCHED) for name in LEVELS
        }
        # Meshes, markers and collision objects go out as CDR written from their arrays (`cdr`)
        # where rclpy reads that back as the messages; else as message objects (seconds slower
        # on 2 cores).
        why_not = cdr.check()
        self.cdr = not why_not
        if why_not:
            self.get_logger().warning(
                f"meshes, markers and collision objects as message objects: {why_not}"
            )
        self.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.session_topic = self.create_publisher(DiagnosticArray, SESSION_TOPIC, LATCHED)
        self.collision = None
        if self.p.collision_object_topic:
            self.collision = self.create_publisher(
                CollisionObject,
                self.p.collision_object_topic,
                COLLISION_QOS,
                event_callbacks=PublisherEventCallbacks(matched=self._on_collision_match),
            )
        self.tf_static = (
            self.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
            if self.p.publish_tf
            else None
        )
        self.registration = []
        if self.p.registration_parent:
            self.registration = [
                ps.static_transform(
                    self.p.registration_parent,
                    self.p.reference_frame,
                    self.get_clock().now().to_msg(),
                    self.p.registration_translation_m,
                    self.p.registration_rotation_xyzw,
                )
            ]
        self.active = False  # the reconstructor's activation switches it on (bringup.Pipeline)
        self.objects: dict[str, CollisionObject | bytes] = {}  # bytes: CDR (`self.cdr`)
        self.frames_sent: list[str] = []
        self.published = 0
        self.resent = 0
        self.dropped = 0  # reconstructions of a session no longer current
        self.collision_fallbacks = 0  # levels whose collision mesh is a padded hull or box
        self.session = ""  # the current session ("": any, until one is set)
        # What is on the topics now (None: nothing), and the same spine as the networks named
        # it (what a confirmation renames).
        self.current: Reconstruction | None = None
        self.found: Reconstruction | None = None
        self.confirmations = 0
        self.confirmations_refused = 0
        self._confirmation = 0  # counts confirmations: a late result of an older one is moot
        # (identity, centres, then) -> queued: the fine stage alone on the published spine's
        # shots (`ReconstructorNode.reconstruct_levels`; bringup wires it).
        self.reconstruct_levels: Callable[..., bool] | None = None
        # The operator's count kept with the session (identity, shift, the networks' names),
        # applied again when the same spine, named the same, is published again (a restart);
        # and where a new count is kept.
        self.stored: tuple[str, int, list[str]] | None = None
        self.on_confirmed: Callable[[str, int, list[str]], None] | None = None
        self._lock = threading.Lock()
        self.confirm_service = None
        try:
            from x23d_interfaces.srv import ConfirmLevels
        except ImportError as error:  # a full ROS 2 install that did not build it
            self.get_logger().warning(
                f"{CONFIRM_SERVICE} unavailable: x23d_interfaces is not installed ({error}); "
                "levels cannot be confirmed"
            )
        else:
            self.confirm_service = self.create_service(
                ConfirmLevels, CONFIRM_SERVICE, self._srv_confirm
            )
        self._send_tf([])
        self.create_timer(self.p.diagnostics_period_s, self._diagnose)

    def publish(self, recon: Reconstruction, still: Callable[[], bool] | None = None) -> bool:
        """Publish `recon` on every output; False (nothing sent) while inactive, when `recon`
        is not the current session's, or when `still` (checked under the lock) says no."""
        stamp = self.get_clock().now().to_msg()
        frame = self.p.reference_frame
        with self._lock:  # before seconds of collision meshes are spent on it
            if not self._publishable(recon) or (still is not None and not still()):
                return False
        collision_meshes = None
        if self.collision is not None:  # outside the lock: decimation takes a while
            fallbacks: list[str] = []
            collision_meshes = ps.collision_meshes(
                recon, self.p.collision_padding_mm, self.p.collision_max_triangles, fallbacks
            )
            for fallback in fallbacks:
                self.get_logger().warning(f"collision mesh {fallback}: larger than needed")
            self.collision_fallbacks += len(fallbacks)
        with self._lock, gc_paused():
            if not self._publishable(recon) or (still is not None and not still()):
                return False  # again: a reset may have come meanwhile
            prefix = self.p.object_id_prefix
            # Everything is made before anything goes out: an error leaves every output as it
            # was (and the planner's objects and frames as they were).
            objects: dict[str, CollisionObject | bytes] = {}
            if self.cdr:  # the meshes, markers and collision objects serialised from arrays
                level_out = {
                    name: sm.mesh_cdr(recon.vertebrae[name]) if name in recon.vertebrae else Mesh()
                    for name in self.meshes
                }
                markers = sm.marker_array_cdr(recon, frame, stamp)
                if self.collision is not None:
                    objects = ps.collision_objects_cdr(
                        recon, frame, stamp, prefix, collision_meshes or sm.mesh_arrays(recon)
                    )
            else:
                level_meshes = sm.meshes(recon)  # built once for the outputs that carry them
                level_out = {name: level_meshes.get(name, Mesh()) for name in self.meshes}
                markers = sm.marker_array(recon, frame, stamp, level_meshes)
                if self.collision is not None:
                    shapes = (
                        level_meshes
                        if collision_meshes is None
                        else {n: sm.mesh_message(*a) for n, a in collision_meshes.items()}
                    )
                    built = ps.collision_objects(recon, frame, stamp, prefix, shapes)
                    objects = {o.id: o for o in built}
            poses = sm.pose_array(recon, frame, stamp)
            gone = ps.removals([i for i in self.objects if i not in objects], frame, stamp)
            transforms = ps.vertebra_transforms(recon, frame, stamp, prefix)
            cloud = sm.point_cloud(recon, frame, stamp)
            for name, publisher in self.meshes.items():  # a level not found: empty
                publisher.publish(level_out[name])
            self.markers.publish(markers)
            self.frames.publish(poses)
            if self.collision is not None:
                for message in gone + list(objects.values()):
                    self.collision.publish(message)
                self.objects = objects
            self._send_tf(transforms)
            self.points.publish(cloud)  # last: it marks "complete"
            self.published += 1
            if recon.level_shift is None:
                self._confirmation += 1  # a level still being reconstructed for one is moot
                if self.current is not None and self.current.level_shift is not None:
                    self.get_logger().warning(
                        "a new reconstruction replaces the confirmed spine: its levels are "
                        "the networks' names, unconfirmed"
                    )
                self.found = recon
            self.current = recon
            self._send_session(recon, stamp)
            again = (
                self.stored
                if recon.level_shift is None
                and self.stored is not None
                and self.stored[0] == recon.identity
                and self.stored[2] == list(recon.vertebrae)
                else None
            )
        if again is not None:  # the same shots, weights and names as a spine counted before
            ok, message, _ = self.confirm(again[0], again[1])
            self.get_logger().info(
                f"the operator's count kept with the session ({describe_shift(again[1])}) "
                + (f"applied again: {message}" if ok else f"not applied: {message}")
            )
        return True

    def confirm(self, reconstruction: str, shift: int) -> tuple[bool, str, list[str]]:
        """The operator's count of the published spine (`CONFIRM_SERVICE`): success, what
        happened (or why not), the levels published after. `reconstruction` must be the
        identity of the spine on the topics (`/x23d/session`); `shift` moves the networks'
        names (`Reconstruction.with_level_shift`)."""
        with self._lock:
            found = self.found
            current = self.current
        why = ""
        if found is None or current is None:
            why = f"nothing is published in session {self.session}"
        elif reconstruction != found.identity:
            why = (
                f"reconstruction {reconstruction or '(empty)'} is not the published spine "
                f"({found.identity}, session {found.session})"
            )
        elif abs(int(shift)) >= 5:
            why = f"a shift of {int(shift):+d} leaves no lumbar level"
        else:
            renamed = found.with_level_shift(int(shift))
            if not renamed.vertebrae:
                why = (
                    f"{describe_shift(int(shift))} leaves none of the published levels "
                    f"({', '.join(found.vertebrae)}) in L1–L5"
                )
        if why:
            self.confirmations_refused += 1
            self.get_logger().warning(f"level confirmation refused: {why}")
            return False, why, []
        with self._lock:
            self._confirmation += 1
            generation = self._confirmation
        if not self.publish(renamed):  # a reset or a new reconstruction came meanwhile
            self.confirmations_refused += 1
            why = "the spine changed while the confirmation was made: look again"
            return False, why, []
        self.confirmations += 1
        names = list(found.vertebrae)
        if self.on_confirmed is not None:
            try:
                self.on_confirmed(found.identity, int(shift), names)
            except Exception as error:  # the count holds now; only a restart would forget it
                self.get_logger().error(f"the count could not be kept with the session: {error!r}")
        with self._lock:
            self.stored = (found.identity, int(shift), names)
        message = (
            f"levels confirmed: {describe_shift(int(shift))}; published "
            f"{', '.join(renamed.vertebrae)}"
        )
        if len(renamed.vertebrae) < len(found.vertebrae):
            message += "; " + renamed.notes[-1]  # which were withdrawn
        exposed = [n for n in levels_exposed(int(shift)) if n not in renamed.vertebrae]
        if exposed:
            message += "; " + self._reconstruct_exposed(renamed, exposed, generation)
        self.get_logger().info(message)
        return True, message, list(renamed.vertebrae)

    def _reconstruct_exposed(
        self, renamed: Reconstruction, exposed: list[str], generation: int
    ) -> str:
        """Queue the levels a shift exposes where the count puts them (one level step beyond
        a published level at most); what is done. The fine stage runs on every published
        level's centre too, so the new level's frame follows the spine; one that no shot
        shows half of is refused (`Reconstructor.reconstruct(..., judge_given=True)`)."""
        centres, far = exposed_job(renamed, exposed)
        names = [n for n in exposed if n not in far]
        said = (
            f"{', '.join(far)} not reconstructed: more than one level beyond the published "
            "ones, or fewer than two published"
            if far
            else ""
        )
        if not names:
            return said
        if self.reconstruct_levels is None:
            done = f"{', '.join(names)} not reconstructed: no reconstructor to ask"
            return "; ".join(x for x in (done, said) if x)

        def then(extra: Reconstruction) -> None:
            merged = renamed.with_levels(extra, names)
            if all(n in merged.missing for n in names):  # nothing to add: nothing re-sent
                self.get_logger().warning(merged.notes[-1])
                return
            if any(n in merged.missing for n in names):
                self.get_logger().warning(merged.notes[-1])
            if not self.publish(merged, still=lambda: self._confirmation == generation):
                self.get_logger().info(
                    f"{', '.join(names)} not published: the spine or its count changed"
                )

        if not self.reconstruct_levels(renamed.identity, centres, then):
            done = f"{', '.join(names)} not reconstructed: the reconstructor holds other shots"
        else:
            it = "them" if len(names) > 1 else "it"
            done = f"reconstructing {', '.join(names)} where the count puts {it}"
        return "; ".join(x for x in (done, said) if x)

    def _srv_confirm(self, request, response):
        response.success, response.message, response.levels = self.confirm(
            request.reconstruction, request.shift
        )
        return response

    def _publishable(self, recon: Reconstruction) -> bool:
        """Whether `recon` may go out now (active, and of the current session); logged and
        counted (`reconstructions_dropped`) when not. The caller holds the lock."""
        if not self.active:
            self.get_logger().info("inactive: reconstruction not published")
            return False
        if self.session and recon.session != self.session:
            self.dropped += 1
            self.get_logger().warning(
                f"reconstruction of session {recon.session or '(none)'} dropped: "
                f"session {self.session} is current"
            )
            return False
        if recon.level_shift is not None and (
            self.found is None or self.found.identity != recon.identity
        ):
            self.get_logger().warning(
                f"confirmed levels of reconstruction {recon.identity} not published: the "
                "spine on the topics is no longer that one"
            )
            return False
        return True

    def set_session(self, session: str) -> None:
        """Make `session` the current one without withdrawing anything (at start)."""
        with self._lock:
            self.session = session
            self._send_session(None, self.get_clock().now().to_msg())

    def withdraw(self, reason: str, session: str | None = None, deactivate: bool = False) -> None:
        """Take the spine back from planners: REMOVE every collision object, drop the vertebra
        frames from /tf_static, clear the markers and publish an empty cloud. With `session`,
        that session becomes the current one in the same step: no reconstruction of the old
        one can be published after this returns; with `deactivate`, nothing at all until
        activated again."""
        stamp = self.get_clock().now().to_msg()
        frame = self.p.reference_frame
        with self._lock:
            if session is not None:
                if session != self.session:
                    self.stored = None  # another session's count
                self.session = session
            if deactivate:
                self.active = False
            if self.collision is not None:
                for message in ps.removals(self.objects, frame, stamp):
                    self.collision.publish(message)
            removed, self.objects = len(self.objects), {}
            self.current = self.found = None
            self._confirmation += 1  # a level still being reconstructed is moot
            self._send_tf([])
            self.markers.publish(
                MarkerArray(
                    markers=[Marker(header=sm.header(frame, stamp), action=Marker.DELETEALL)]
                )
            )
            for publisher in self.meshes.values():  # latched: a late subscriber gets nothing
                publisher.publish(Mesh())
            self.frames.publish(PoseArray(header=sm.header(frame, stamp)))
            nothing = Reconstruction(
                vertebrae={}, missing=list(LEVELS), timings_ms={}, device="", views=0
            )
            self.points.publish(sm.point_cloud(nothing, frame, stamp))
            self._send_session(None, stamp)
        self.get_logger().info(f"{reason}: {removed} collision objects removed")

    def _send_session(self, recon: Reconstruction | None, stamp) -> None:
        """The latched session record: what the published spine (if any) comes from (caller
        holds the lock)."""
        values = {"session": self.session, "published": "false"}
        if recon is not None:
            values.update(
                published="true",
                session=recon.session,
                # The spine's identity, for /x23d/confirm_levels to name.
                reconstruction=recon.identity,
                shots=str(len(recon.shot_stamps)),
                shot_stamps=",".join("" if t is None else f"{t:.9f}" for t in recon.shot_stamps),
                imaged_at="" if recon.stamp is None else f"{recon.stamp:.9f}",
                weights_sha256=recon.weights_sha256,
                adaptation=recon.adaptation or "none",
                levels=",".join(recon.vertebrae),
                # The patient's axes the spine was reconstructed in (columns x left, y
                # posterior, z superior, in reference_frame, row-major) and their source.
                patient_orientation=recon.orientation,
                patient_axes=",".join(f"{v:.6f}" for v in np.asarray(recon.patient_axes).ravel()),
                # Bone where the ends of the count (the sacrum, T12) should be if the levels
                # are named right, and the shots showing each (`x23d_ros.landmarks`); "none":
                # the names rest on the vertebrae's shapes alone. Never proof of the count.
                count_landmarks=recon.count_landmarks,
                **{f"landmark_shots.{k}": str(v) for k, v in recon.landmark_shots.items()},
                # Whether an operator confirmed the names by counting (/x23d/confirm_levels),
                # the shift they gave, and the networks' names for the same vertebrae.
                levels_confirmed=str(recon.level_shift is not None).lower(),
                level_shift="" if recon.level_shift is None else f"{recon.level_shift:+d}",
                levels_as_found=",".join(recon.levels_as_found),
            )
        message = (
            f"spine of session {values['session']}"
            if recon is not None
            else f"session {self.session}: nothing published"
        )
        no_landmark = recon is not None and recon.no_landmark
        if no_landmark:
            message += f": {NO_LANDMARK_NOTE}"
        elif recon is not None and recon.level_shift is not None:
            message += f": levels confirmed by the operator ({describe_shift(recon.level_shift)})"
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if no_landmark else DiagnosticStatus.OK,
            name="x23d_ros: session",
            hardware_id="x23d_ros",
            message=message,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        self.session_topic.publish(
            DiagnosticArray(header=sm.header(self.p.reference_frame, stamp), status=[status])
        )

    def set_active(self, active: bool) -> None:
        """Follow the reconstructor's lifecycle: deactivation withdraws the spine and stops
        publication; activation resumes it."""
        if not active:
            self.withdraw("deactivated", deactivate=True)
            return
        with self._lock:
            self.active = True

    def flush(self, timeout_s: float) -> bool:
        """Wait until reliable subscribers acknowledged what was sent (at most `timeout_s`)."""
        from rclpy.duration import Duration

        publishers = [p for p in (self.collision, self.points, self.tf_static) if p is not None]
        deadline = Duration(nanoseconds=int(timeout_s * 1e9))
        return all(p.wait_for_all_acked(deadline) for p in publishers)

    def _send_tf(self, vertebrae: list) -> None:
        """One TFMessage with all of this package's static frames (caller holds the lock)."""
        if self.tf_static is None:
            return
        transforms = self.registration + vertebrae
        children = [t.child_frame_id for t in transforms]
        if not transforms and not self.frames_sent:
            return
        self.tf_static.publish(ps.tf_message(transforms))
        self.frames_sent = children

    def _on_collision_match(self, info: QoSPublisherMatchedInfo) -> None:
        """MoveIt's planning scene subscribes volatile: to a new match, REMOVE every object id
        of this package that this process does not hold now, then re-send the ones it holds.
        A process that died (SIGKILL, power) could not remove its objects; a planner keeps
        them until told otherwise, so a restarted process clears them as soon as the planner
        matches it, before any reconstruction (a planner may log that an id it never had
        cannot be removed)."""
        if info.current_count_change <= 0:
            return
        with self._lock:
            held = self.objects if self.active else {}
            ids = [ps.object_id(self.p.object_id_prefix, name) for name in LEVELS]
            stale = [i for i in ids if i not in held]
            stamp = self.get_clock().now().to_msg()
            for message in ps.removals(stale, self.p.reference_frame, stamp):
                self.collision.publish(message)
            for message in held.values():
                self.collision.publish(message)
            self.resent += 1

    def _diagnose(self) -> None:
        values = {
            "version": __version__,
            "published": str(self.published),
            "collision_objects": ",".join(self.objects),
            "tf_static_frames": ",".join(self.frames_sent),
            "collision_objects_resent": str(self.resent),
            "reconstructions_dropped": str(self.dropped),
            "collision_fallbacks": str(self.collision_fallbacks),
            # /x23d/confirm_levels: "available" or "unavailable" (no x23d_interfaces), and
            # how the published levels stand.
            "level_confirmation": "available" if self.confirm_service else "unavailable",
            "levels_confirmed": str(
                self.current is not None and self.current.level_shift is not None
            ).lower(),
            "level_confirmations": str(self.confirmations),
            "level_confirmations_refused": str(self.confirmations_refused),
            # How meshes, markers and collision objects go out: "cdr" (from their arrays) or
            # "objects".
            "mesh_encoding": "cdr" if self.cdr else "objects",
            **self.status(),
        }
        warn = any(k.startswith("incompatible_qos.") for k in values) or values.get("last_error")
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if warn else DiagnosticStatus.OK,
            name="x23d_ros: reconstruction",
            hardware_id="x23d_ros",
            message=values.get("state", ""),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        self.diagnostics.publish(
            DiagnosticArray(header=sm.header("", self.get_clock().now().to_msg()), status=[status])
        )
