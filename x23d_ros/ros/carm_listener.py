"""`carm_listener`: collect posed C-arm shots into a persisted session; ask for reconstructions.

Subscribes to the image, its camera info and (`pose_source: topic`) a PoseStamped of the X-ray
source in `reference_frame` (`pose_source: tf`: the image's frame in `reference_frame` at its
stamp, through tf2_ros or, where it is not installed, `ros.tf_reader`); pairs them by stamp
(`ros.sync.StampMatcher`); checks each shot (`session.check_shot`); writes every accepted shot
to the session folder at once. At `views_required` shots, on `/x23d/reconstruct`, and for every
shot added after that, it hands the whole set to `on_shot_set` (the reconstructor, in the same
process). `/x23d/reset` starts a new session (and the reconstructor drops the old one's work).
At start it resumes the newest session only if it is younger than `resume_max_age_s` and, with
`patient_id` set, that patient's; else it starts a new one and logs why. A bad message is
logged with its reason and counted (`rejections`); it never stops the node nor touches the
shots already collected.

`input_qos`: `reliable` (depth 10) or `sensor_data` (best effort, REP 2003); the camera info and
pose subscriptions keep `SMALL_DEPTH` instead (small messages: a listener that lags a third of
a second behind a 30 Hz stream must not lose the camera info its images wait for). A publisher whose
QoS cannot match a subscription delivers nothing, silently: every incompatible-QoS event is
logged with both profiles and counted per topic (`incompatible_qos`, in diagnostics).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from x23d_ros.distortion import DewarpMap, DistortionError, undistort
from x23d_ros.pipeline import INTAKE_DOMAINS, MIN_SHOTS, Shot, ShotSet, infer_domain
from x23d_ros.ros.image_conversion import FULL_SCALE, ImageMessageError, image_from_msg
from x23d_ros.ros.parameters import Param, declare
from x23d_ros.ros.sync import Match, StampMatcher
from x23d_ros.session import ShotChecks, ShotRejectedError, ShotSession, check_shot

PARAMS = (
    Param("reference_frame", "patient_ref", "frame the poses are given in (mm inside, m in ROS)"),
    Param("image_topic", "/carm/image_raw", "sensor_msgs/Image of the C-arm"),
    Param("camera_info_topic", "/carm/camera_info", "sensor_msgs/CameraInfo of the C-arm"),
    Param("pose_topic", "/carm/pose", "geometry_msgs/PoseStamped of the X-ray source"),
    Param(
        "pose_source",
        "topic",
        "topic (PoseStamped) or tf (the image frame in reference_frame at its stamp)",
    ),
    Param("input_qos", "reliable", "reliable (depth 10) or sensor_data (best effort, REP 2003)"),
    Param("sync_tolerance_s", 0.05, "largest stamp difference image/info/pose", 0.0, 10.0),
    Param(
        "sync_wait_s",
        2.0,
        "how long an image waits for its info and pose (pose_source tf: for its transform)",
        0.01,
        60.0,
    ),
    Param("max_pose_age_s", 0.5, "largest |image stamp − pose stamp|", 0.0, 60.0),
    Param("min_view_separation_deg", 5.0, "refuse a view this close to one collected", 0.0, 90.0),
    Param("views_required", 3, "shots that trigger a reconstruction", MIN_SHOTS, 8),
    Param("session_dir", "~/.ros/x23d_sessions", "where accepted shots are persisted"),
    Param("resume_session", True, "continue the newest session found in session_dir, if recent"),
    Param(
        "resume_max_age_s",
        1800.0,
        "resume only a session whose last shot or reconstruction is at most this old",
        0.0,
        1e9,
    ),
    Param("patient_id", "", "when set, resume only this patient's session; stored with the shots"),
    Param(
        "domain",
        "synthetic",
        "what the shots are: synthetic (32FC1 bone line integrals μ·L), realistic "
        "(fluoroscopy display frames: mono8, mono16/16UC1 scaled by white_level, or 32FC1 in "
        "[0, 1]; bone dark or bright), or auto (each shot's from its encoding and values: "
        "mono8/mono16/16UC1 realistic, 32FC1 above 1 synthetic, 32FC1 within [0, 1] the "
        "session's domain or realistic; a session's shots are all of one domain)",
    ),
    Param(
        "white_level",
        0.0,
        "realistic domain: the pixel value of full white (e.g. 4095 for 12-bit frames in "
        "mono16); 0: the encoding's full scale (255, 65535)",
        0.0,
        65535.0,
    ),
    Param(
        "patient_orientation",
        "given",
        "where the patient's axes (x left, y posterior, z superior) in reference_frame come "
        "from: given (patient_orientation_xyzw) or shots (read from the shots by the "
        "orientation network, whatever the orientation of reference_frame: measured on "
        "simulated spines only, off by up to 63° on a real CT; see the README)",
    ),
    Param(
        "patient_orientation_xyzw",
        [0.0, 0.0, 0.0, 1.0],
        "the patient's axes in reference_frame, a unit quaternion (identity: reference_frame "
        "is in the patient's axes); with patient_orientation given",
    ),
    Param(
        "dewarp_map",
        "",
        "the C-arm's dewarp map (.npz of map_x, map_y); empty: CameraInfo's distortion model",
    ),
)


#: The furthest a message's stamp may lie ahead of this node's clock (a C-arm and a tracker
#: synchronised by NTP or PTP differ by milliseconds).
MAX_FUTURE_S = 5.0
#: After a reset, how long images acquired before it may still arrive (in transit on DDS: a
#: 2 MB frame takes milliseconds on a LAN, retransmissions some hundreds): refused as
#: `before_reset`. Bounded so that a driver whose clock jumps cannot have images refused for
#: longer than this.
RESET_TRANSIT_S = 2.0
#: Images whose arrival lag (this node's clock − stamp) estimates the clock offset.
LAG_WINDOW = 30


def pose_to_matrix(msg: PoseStamped) -> np.ndarray:
    """T (4, 4) in mm. The quaternion must be finite and of unit norm within 1e-3 (it is then
    normalised); anything else raises ValueError."""
    p, q = msg.pose.position, msg.pose.orientation
    quat = np.array([q.x, q.y, q.z, q.w], float)
    position = np.array([p.x, p.y, p.z], float)
    if not (np.isfinite(quat).all() and np.isfinite(position).all()):
        raise ValueError("pose holds NaN or infinite values")
    norm = np.linalg.norm(quat)
    if abs(norm - 1.0) > 1e-3:
        raise ValueError(f"pose quaternion has norm {norm:.6f}, not 1")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quat / norm).as_matrix()
    T[:3, 3] = position * 1000.0
    return T


INPUT_QOS = {"reliable": QoSProfile(depth=10), "sensor_data": qos_profile_sensor_data}
#: Depth of the camera info and pose subscriptions (3.3 s at 30 Hz: tens of kB).
SMALL_DEPTH = 100


def input_qos(name: str, depth: int | None = None) -> QoSProfile:
    """The `input_qos` profile `name`, with `depth` (when given) in place of its own: the
    depth does not enter QoS compatibility, so a publisher matches either."""
    base = INPUT_QOS[name]
    if depth is None:
        return base
    return QoSProfile(
        history=base.history,
        depth=depth,
        reliability=base.reliability,
        durability=base.durability,
    )


def describe_qos(qos: QoSProfile) -> str:
    return f"{qos.reliability.name.lower()}, {qos.durability.name.lower()}, depth {qos.depth}"


#: pose_source tf: images held at once for a transform that has not arrived yet (about two
#: seconds of a 30 Hz stream); beyond it the oldest is refused (tf_lookup).
MAX_TF_WAITING = 64
TF_RETRY_S = 0.05  # how often held images try their transform again
MATCHER_POLL_S = 0.25  # how often images waiting in the matcher are looked at anew
#: A refusal is logged at most once a second per reason (the count since the last line is
#: in it; diagnostics count every one): a 30 Hz stream of refused frames would otherwise
#: write about 11 MB of log an hour.
REJECT_LOG_PERIOD_S = 1.0


def _stamp(msg) -> float:
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


class CArmListener(Node):
    def __init__(
        self,
        on_shot_set: Callable[[ShotSet], None] | None = None,
        on_reset: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__("carm_listener")
        self.p = declare(self, PARAMS)
        self.on_shot_set = on_shot_set or (lambda _: None)
        self.on_reset = on_reset or (lambda _: None)
        self.rejections: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()  # refusals since their reason's last line
        self._logged_at: dict[str, float] = {}
        self._last_detail: dict[str, str] = {}
        self.images_received = 0
        # Arrival lag of the last images (this node's clock − stamp, s): its minimum is the
        # C-arm's clock offset plus the shortest transit, whatever the clocks' agreement.
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self._reset_at: float | None = None  # this node's clock at the last reset
        self._reset_lag = 0.0  # the smallest lag before it
        self.incompatible_qos: Counter[str] = Counter()
        self.checks = ShotChecks(self.p.min_view_separation_deg, self.p.max_pose_age_s)
        if self.p.domain not in INTAKE_DOMAINS:
            raise ValueError(f"domain must be one of {INTAKE_DOMAINS}, not {self.p.domain!r}")
        root = Path(self.p.session_dir).expanduser()
        if self.p.resume_session:
            self.session, why = ShotSession.resume(
                root, self.p.domain, self.p.resume_max_age_s, self.p.patient_id
            )
        else:
            self.session, why = ShotSession.new(root, self.p.domain, self.p.patient_id), "off"
        if why:
            self.get_logger().info(f"new session {self.session.id}; not resumed: {why}")
        else:
            self.get_logger().info(
                f"resumed session {self.session.folder} with {len(self.session)} shots"
            )
        self.dewarp = DewarpMap.load(self.p.dewarp_map) if self.p.dewarp_map else None
        q = np.asarray(self.p.patient_orientation_xyzw, float)
        if q.shape != (4,) or not np.isfinite(q).all() or abs(np.linalg.norm(q) - 1.0) > 1e-3:
            raise ValueError(
                f"patient_orientation_xyzw must be a unit quaternion, not {q.tolist()}"
            )
        if self.p.patient_orientation not in ("shots", "given"):
            raise ValueError(
                f"patient_orientation must be shots or given, not {self.p.patient_orientation!r}"
            )
        # None: the reconstructor reads the patient's axes from the shots.
        self.patient_axes = (
            Rotation.from_quat(q).as_matrix() if self.p.patient_orientation == "given" else None
        )
        if self.p.pose_source not in ("topic", "tf"):
            raise ValueError(f"pose_source must be topic or tf, not {self.p.pose_source!r}")
        self.matcher = StampMatcher(
            self.p.sync_tolerance_s, self.p.pose_source == "topic", self.p.sync_wait_s
        )
        if self.p.input_qos not in INPUT_QOS:
            raise ValueError(
                f"input_qos must be one of {sorted(INPUT_QOS)}, not {self.p.input_qos!r}"
            )
        self._subscribe(Image, self.p.image_topic, self._on_image)
        self._subscribe(CameraInfo, self.p.camera_info_topic, self._on_info, SMALL_DEPTH)
        if self.p.pose_source == "topic":
            self._subscribe(PoseStamped, self.p.pose_topic, self._on_pose, SMALL_DEPTH)
        else:
            self._init_tf()
        self._init_tf_wait()
        # The last frames of a stream that stops have nothing after them to release them.
        self.create_timer(
            MATCHER_POLL_S,
            lambda: self._handle(*self.matcher.poll()),
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )
        self.create_timer(
            REJECT_LOG_PERIOD_S,
            self._flush_refusals,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )
        self.create_service(Trigger, "/x23d/reconstruct", self._srv_reconstruct)
        self.create_service(Trigger, "/x23d/reset", self._srv_reset)
        if not why and len(self.session) >= self.p.views_required:
            # A crash or restart mid-reconstruction: the same shots, the same session, again.
            self.get_logger().info(f"resumed with {len(self.session)} shots: reconstructing")
            self._request()

    # -- inputs -------------------------------------------------------------------------
    def _subscribe(self, kind, topic: str, callback, depth: int | None = None) -> None:
        qos = input_qos(self.p.input_qos, depth)
        events = SubscriptionEventCallbacks(
            incompatible_qos=partial(self._incompatible, topic, qos)
        )
        self.create_subscription(kind, topic, callback, qos, event_callbacks=events)

    def _incompatible(
        self, topic: str, qos: QoSProfile, info: QoSRequestedIncompatibleQoSInfo
    ) -> None:
        self.incompatible_qos[topic] += max(1, info.total_count_change)
        offered = "; ".join(
            f"{e.node_name if e.node_name != '_NODE_NAME_UNKNOWN_' else 'a publisher'} offers "
            f"{describe_qos(e.qos_profile)}"
            for e in self.get_publishers_info_by_topic(topic)
        )
        policy = info.last_policy_kind.name.lower().removeprefix("rmw_qos_policy_")
        self.get_logger().error(
            f"{topic}: incompatible QoS ({policy}), nothing from that "
            f"publisher arrives. This subscription requests {describe_qos(qos)} "
            f"(input_qos: {self.p.input_qos}); {offered or 'publisher gone'}. "
            "For a best-effort driver set input_qos: sensor_data."
        )

    def _init_tf(self) -> None:
        """tf2_ros where installed (every full ROS 2 install); else x23d_ros's TF reader."""
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError:
            from x23d_ros.ros.tf_reader import TfReader

            self.tf_buffer = None
            # A sample is kept as long as an image may wait for it, and a margin: in the
            # stamp matcher for its camera info (up to its keep_s), then for its transform
            # (sync_wait_s from the matcher's release, `_tf_waiting`).
            keep_s = self.matcher.keep_s + self.p.sync_wait_s + self.p.max_pose_age_s
            self.tf_reader = TfReader(self, self.p.max_pose_age_s, keep_s)
            self.get_logger().info(
                "tf2_ros not installed: poses from /tf and /tf_static (TfReader)"
            )
            return
        self.tf_buffer = Buffer()
        self.tf_listener = TransformListener(self.tf_buffer, self)

    def _init_tf_wait(self) -> None:
        """An image whose transform has not arrived yet waits for it (as tf2_ros's
        MessageFilter holds a message), up to `sync_wait_s` of this node's wall time: a
        tracker's /tf often comes a little after the frame it serves."""
        self._tf_waiting: list[tuple[float, Match, str]] = []  # (deadline, match, last error)
        if self.p.pose_source == "tf":  # on the steady clock: held images age in wall time
            self.create_timer(
                TF_RETRY_S, self._retry_tf, clock=Clock(clock_type=ClockType.STEADY_TIME)
            )

    def _reject(self, reason: str, detail: str) -> None:
        self.rejections[reason] += 1
        if time.monotonic() - self._logged_at.get(reason, -np.inf) < REJECT_LOG_PERIOD_S:
            self._unlogged[reason] += 1
            self._last_detail[reason] = detail
            return
        self._log_refusal(reason, detail)

    def _log_refusal(self, reason: str, detail: str) -> None:
        self._logged_at[reason] = time.monotonic()
        more = self._unlogged.pop(reason, 0)
        since = f" ({more} more for this reason since its last line)" if more else ""
        self.get_logger().warning(f"shot refused ({reason}): {detail}{since}")

    def _flush_refusals(self) -> None:
        """The refusals a line did not name yet, once their reason's period is over (the last
        of a burst would otherwise never be logged)."""
        for reason in list(self._unlogged):
            if time.monotonic() - self._logged_at[reason] >= REJECT_LOG_PERIOD_S:
                self._unlogged[reason] -= 1  # the line names this one's detail itself
                self._log_refusal(reason, self._last_detail.pop(reason))

    def _future(self, msg, kind: str) -> bool:
        """True (and refused) for a stamp more than MAX_FUTURE_S ahead of this node's clock:
        one such message would otherwise end every image's wait at once (the matcher's time
        is the newest stamp seen)."""
        ahead = _stamp(msg) - self.get_clock().now().nanoseconds * 1e-9
        if ahead > MAX_FUTURE_S:
            self._reject("stamp", f"{kind} stamped {ahead:.1f} s in the future")
            return True
        return False

    def _on_image(self, msg: Image) -> None:
        self.images_received += 1
        if self._future(msg, "image"):
            return
        stamp, now = _stamp(msg), self.get_clock().now().nanoseconds * 1e-9
        self._lags.append(now - stamp)
        if self._before_reset(stamp, now):
            return
        try:
            image = image_from_msg(msg)
        except ImageMessageError as error:
            self._reject("bad_image", str(error))
            return
        image = image.astype(np.float32)
        domain = self.p.domain
        if domain == "auto":
            domain = infer_domain(image, msg.encoding, self.session.meta["domain"])
        if domain == "realistic" and msg.encoding in FULL_SCALE:
            image /= self.p.white_level or FULL_SCALE[msg.encoding]  # display values in [0, 1]
        # The header alone travels with the image (the raw message would double what waits).
        self._handle(*self.matcher.add_image(stamp, (image, msg.header, domain)))

    def _before_reset(self, stamp: float, now: float) -> bool:
        """True (and refused) for an image acquired before the last reset that arrives after
        it (in transit then): it belongs to the previous patient. Acquired before: its stamp,
        moved into this node's clock by the smallest arrival lag seen before the reset, lies
        before the reset; an image acquired after it cannot (its own lag is at least that
        offset). Checked for `RESET_TRANSIT_S` after the reset only."""
        if self._reset_at is None or now - self._reset_at > RESET_TRANSIT_S:
            return False
        early = self._reset_at - (stamp + self._reset_lag)
        if early <= 0:
            return False
        self._reject(
            "before_reset",
            f"image stamped {stamp:.3f} s, acquired {early:.3f} s before the reset (by the "
            "C-arm's clock offset from this computer's, as its last images arrived): it "
            "belongs to the previous session",
        )
        return True

    def _on_info(self, msg: CameraInfo) -> None:
        if self._future(msg, "camera info"):
            return
        self._handle(*self.matcher.add_info(_stamp(msg), msg))

    def _on_pose(self, msg: PoseStamped) -> None:
        if self._future(msg, "pose"):
            return
        if msg.header.frame_id != self.p.reference_frame:
            self._reject(
                "pose_frame",
                f"pose in {msg.header.frame_id!r}, expected {self.p.reference_frame!r}",
            )
            return
        try:
            T = pose_to_matrix(msg)
        except ValueError as error:
            self._reject("pose_values", str(error))
            return
        self._handle(*self.matcher.add_pose(_stamp(msg), T))

    def _tf_pose(self, header, final: bool = False) -> tuple[np.ndarray | None, str]:
        """T_ref_source (mm) at the image's stamp, the source being the image's frame_id; or
        None and why TF cannot answer (yet). `final`: the image waits no longer (TfReader then
        takes an older sample within the tolerance without one after the image)."""
        source, target = header.frame_id, self.p.reference_frame
        if self.tf_buffer is None:
            try:
                stamp = header.stamp.sec + 1e-9 * header.stamp.nanosec
                return self.tf_reader.lookup(target, source, stamp, final), ""
            except LookupError as error:
                return None, str(error)
        from rclpy.time import Time

        try:
            stamp = Time.from_msg(header.stamp)
            t = self.tf_buffer.lookup_transform(target, source, stamp).transform
        except Exception as error:  # tf2's lookup exceptions share no base we can import here
            return None, str(error)
        msg = PoseStamped()
        msg.pose.position.x, msg.pose.position.y = t.translation.x, t.translation.y
        msg.pose.position.z = t.translation.z
        msg.pose.orientation = t.rotation
        return pose_to_matrix(msg), ""

    def _handle(self, matches, expired) -> None:
        for e in expired:
            self._reject(e.reason, f"image stamped {e.stamp:.3f} s: {e.detail}")
        for m in matches:
            if m.pose is not None:
                self._accept(m, m.pose)
                continue
            T, error = self._tf_pose(m.image[1])
            if T is not None:
                self._accept(m, T)
                continue
            self._tf_waiting.append((time.monotonic() + self.p.sync_wait_s, m, error))
            if len(self._tf_waiting) > MAX_TF_WAITING:
                _, oldest, why = self._tf_waiting.pop(0)
                self._reject(
                    "tf_lookup",
                    f"image stamped {oldest.stamp:.3f} s: {MAX_TF_WAITING} newer images wait "
                    f"for their transforms; {why}",
                )

    def _retry_tf(self) -> None:
        """Held images try their transform again; one past its deadline is refused with the
        lookup's last error."""
        if not self._tf_waiting:
            return
        now, waiting = time.monotonic(), []
        for deadline, m, _ in self._tf_waiting:
            T, error = self._tf_pose(m.image[1], final=now > deadline)
            if T is not None:
                self._accept(m, T)
            elif now > deadline:
                self._reject(
                    "tf_lookup",
                    f"image stamped {m.stamp:.3f} s: no transform within sync_wait_s "
                    f"({self.p.sync_wait_s} s): {error}",
                )
            else:
                waiting.append((deadline, m, error))
        self._tf_waiting = waiting

    def _accept(self, m: Match, T: np.ndarray) -> None:
        """A matched image with its pose: undistorted, checked, added to the session."""
        image, domain = m.image[0], m.image[2]
        K = np.asarray(m.info.k, float).reshape(3, 3)
        try:
            image = self._undistort(image, K, m.info)
        except DistortionError as error:
            self._reject("distortion", str(error))
            return
        shot = Shot(image, K, T, m.stamp)
        try:
            check_shot(
                shot,
                self.session.shots,
                self.checks,
                pose_stamp=m.pose_stamp,
                info_size=(m.info.height, m.info.width),
                domain=domain,
            )
            self.session.set_domain(domain)  # domain_mismatch: another domain than its shots'
        except ShotRejectedError as error:
            self._reject(error.reason, str(error))
            return
        index = self.session.add(shot)
        self.get_logger().info(
            f"shot {index} accepted ({len(self.session)}/{self.p.views_required})"
        )
        if len(self.session) >= self.p.views_required:
            self._request()

    def _undistort(self, image: np.ndarray, K: np.ndarray, info: CameraInfo) -> np.ndarray:
        """The shot as the pinhole K sees it: through the dewarp map when one is given, else
        CameraInfo's `plumb_bob` / `rational_polynomial` model (others refused)."""
        if self.dewarp is not None:
            return self.dewarp.apply(image)
        if image.shape != (info.height, info.width):
            return image  # check_shot refuses it (size_mismatch) with the sizes
        return undistort(image, K, info.distortion_model, list(info.d))

    # -- triggers -----------------------------------------------------------------------
    def _request(self) -> bool:
        if len(self.session) < MIN_SHOTS:
            return False
        self.session.record_reconstruction()
        shot_set = self.session.shot_set()
        shot_set.patient_axes = self.patient_axes
        self.on_shot_set(shot_set)
        return True

    def _srv_reconstruct(self, _request, response):
        response.success = self._request()
        response.message = (
            f"reconstructing from {len(self.session)} shots"
            if response.success
            else f"{len(self.session)} shots; at least {MIN_SHOTS} needed"
        )
        return response

    def _srv_reset(self, _request, response):
        old = self.session.folder
        new = ShotSession.new(
            Path(self.p.session_dir).expanduser(), self.p.domain, self.p.patient_id
        )
        # Images acquired before the reset (waiting for their info, pose or transform) belong
        # to the old patient: dropped, not added to the new session.
        dropped = self.matcher.drop_images() + len(self._tf_waiting)
        self._tf_waiting = []
        # Those still in transit are refused as they arrive (`_before_reset`).
        if self._lags:
            self._reset_at = self.get_clock().now().nanoseconds * 1e-9
            self._reset_lag = min(self._lags)
        if dropped:
            self.get_logger().info(f"reset: {dropped} images still waiting were dropped")
        try:  # first: from here on nothing of the old session is published
            self.on_reset(new.id)
        except Exception as error:  # the new session stands; say what the outputs could not do
            self.get_logger().error(f"reset: the published spine was not withdrawn: {error!r}")
        self.session = new
        response.success = True
        response.message = f"new session {self.session.folder.name}; {old.name} kept on disk"
        return response
