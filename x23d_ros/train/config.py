"""A training run's configuration (`TrainConfig`) and its learning-rate schedule."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from x23d_ros.anatomy import LEVELS
from x23d_ros.model.network import NetConfig

STAGES = ("coarse", "fine")
#: Where the fine stage's crops are cut from: each shot at its own resolution ("native"), or
#: the shot resized to `image_size` first ("working", as weights before native crops trained).
CROP_SOURCES = ("native", "working")


def default_net(stage: str) -> NetConfig:
    """The network of a stage: L1..L5 classes (coarse) or one vertebra's occupancy (fine)."""
    return NetConfig(classes=1 if stage == "fine" else len(LEVELS) + 1, image_norm=2.0)


@dataclass
class TrainConfig:
    data: str
    out: str
    val: str | None = None
    stage: str = "coarse"  # coarse | fine
    domain: str = "synthetic"
    steps: int = 2000
    lr: float = 2e-3
    # Learning rate: constant, then from step `decay_from` (if set) a cosine down to `lr_min`
    # at `steps` (warmup-free "stable, then decay" schedule).
    decay_from: int | None = None
    lr_min: float = 1e-5
    # The grid: one side (a cube) or (X, Y, Z) voxels, at `spacing_mm`.
    grid: int | tuple[int, int, int] = 48
    spacing_mm: float = 4.0
    # The coarse stage's working image size (every shot is area-resized to it); with
    # crop_source "working", also what the fine stage's crops are cut from.
    image_size: int = 128
    views: tuple[int, int] = (2, 4)  # shots drawn per step, inclusive
    centre_jitter_mm: float = 10.0
    # With probability `centre_jitter_wide_p`, a grid's centre is jittered by
    # `centre_jitter_wide_mm` (sd per axis) instead: heavier tails, so that the network finds
    # the vertebra in the images rather than trusting the grid's centre (a vertebra whose
    # proportions differ from the training population otherwise lands where the grid puts it).
    centre_jitter_wide_mm: float = 0.0
    centre_jitter_wide_p: float = 0.0
    # Pose error of a tracked C-arm (per view, independently): a rotation about the shots'
    # isocentre (SD, degrees, about a random axis) and a shift (SD per axis, mm). Sized to
    # fiducial-tracked C-arm poses: 0.65° in rotation and 0.5 mm in translation (Jain, Kon,
    # Zhou, Fichtinger, "C-arm calibration - is it really necessary?", MICCAI 2005), i.e.
    # 0.3 mm per axis (0.52 mm in 3D). Weights before this trained with 0.5° about the source
    # and 1 mm: 3.1 mm per axis at the isocentre.
    pose_jitter_deg: float = 0.65
    pose_jitter_mm: float = 0.3
    # What the pose error turns about: "anatomy" (the shots' isocentre) or "source" (each
    # view's X-ray source, as the weights before trained: for ablations).
    pose_jitter_pivot: str = "anatomy"
    intensity_gain: tuple[float, float] = (0.8, 1.25)
    noise_sd: float = 0.02
    checkpoint_every: int = 50
    log_every: int = 10
    val_every: int = 200
    seed: int = 0
    crop_mm: float = 120.0  # fine stage: side of each view's crop at the vertebra's depth
    crop_px: int = 128  # fine stage: crops are resampled to crop_px²
    crop_source: str = "native"
    levels_per_step: int = 2  # fine stage: vertebrae of one case per step
    # bf16 autocast on the CPU (a GPU always uses it): faster only where the processor has
    # bf16 matrix units (AMX); measure before turning it on. Ignored (fp32, logged) on a CPU
    # without native bf16 (`loop.cpu_has_bf16`): emulated, it is about 60 times slower.
    bf16: bool = False
    net: NetConfig = field(default_factory=lambda: default_net("coarse"))
    # Where a new run starts from (no checkpoint yet): a run's checkpoint.pt, or a weights
    # file (its network of this stage); grown to `net` if that is larger (`model.grow`).
    init: str | None = None
    # Names of the parameters that train (prefixes of `X23DNet.named_parameters()`, e.g.
    # "decoder.enc0"); empty: all. The others stay as `init` gave them: a network whose
    # full-resolution level was just narrowed (`model.narrow`) can relearn that level first,
    # without its trained lower levels chasing the new level's early errors.
    train_only: tuple[str, ...] = ()
    # Knowledge distillation: a trained network of this stage (a weights file or a run's
    # checkpoint.pt) whose output the network also learns (its cross-entropy against the
    # teacher's probabilities, times `teacher_weight`, added to the loss). A dense target at
    # every voxel, for a network that must relearn a level (`model.narrow`).
    teacher: str | None = None
    teacher_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.crop_source not in CROP_SOURCES:
            raise ValueError(f"crop_source must be one of {CROP_SOURCES}, not {self.crop_source!r}")
        if self.pose_jitter_pivot not in ("anatomy", "source"):
            raise ValueError(
                f"pose_jitter_pivot must be anatomy or source, not {self.pose_jitter_pivot!r}"
            )
        if self.stage == "fine" and self.net.classes != 1:
            raise ValueError("the fine stage predicts one vertebra's occupancy: net.classes = 1")
        if self.stage == "coarse" and self.net.classes != len(LEVELS) + 1:
            raise ValueError(f"the coarse stage has {len(LEVELS) + 1} classes (background, L1..L5)")

    @property
    def source_size(self) -> int | None:
        """What the fine stage's crops are cut from (`model.inputs.fine_inputs`)."""
        return self.image_size if self.crop_source == "working" else None

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        raw = json.loads(text)
        net = default_net(raw.get("stage", "coarse")).as_dict()
        raw["net"] = NetConfig(**{**net, **raw.get("net", {})})
        for key in ("views", "intensity_gain", "grid", "train_only"):
            if isinstance(raw.get(key), list):
                raw[key] = tuple(raw[key])
        return cls(**raw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of step `step` (0-based) under `cfg`'s schedule."""
    if cfg.decay_from is None or step < cfg.decay_from:
        return cfg.lr
    span = max(cfg.steps - cfg.decay_from, 1)
    t = min((step - cfg.decay_from) / span, 1.0)
    return float(cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1.0 + np.cos(np.pi * t)))
