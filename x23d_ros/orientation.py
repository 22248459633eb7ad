"""The patient's axes from the shots themselves, whatever the orientation of the poses' frame.

The reconstruction networks were trained in the patient's axes (x left, y posterior, z
superior): their grids are cut along those axes. A tracked reference array can be mounted at
any angle, so the poses' frame (`reference_frame`) need not be in those axes.

Each shot says, through its anatomy, where the patient's superior and posterior directions
lie in its image plane (ribs above the lumbar spine, iliac wings and sacrum below; vertebral
bodies in front of the spinous processes). A small 2D network reads, per shot, the projection
of the patient's superior axis and of its posterior axis onto the image plane: two 2-vectors
(u, v) in pixel axes whose lengths are the cosines of the axes' angles to the image plane.
Each shot's source frame turns its 2-vectors into two linear equations on the 3D axis, so two
or more non-parallel shots fix each axis by least squares; the two are then made orthonormal
(superior first). The solution turns with the poses' frame (it is built from the shots'
rotations and images alone), so a reference frame turned by any rotation gives the same
patient axes, turned.

The network never sees which way a detector's rows run: it is trained on shots turned by any
angle in their plane and mirrored, cut to the disk inscribed in the image, so a C-arm's image
orientation teaches it nothing. Its inputs are bone-only line integrals (the synthetic
domain); fluoroscopy goes through the style transfer first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from x23d_ros.model.inputs import area_resized

ORIENTATION_FORMAT = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_ORIENTATION = WEIGHTS_DIR / "orientation.pt"
#: The network's input side (pixels): each shot area-resized so its longer side is this.
INPUT_SIZE = 128
#: The patient's axes the network reads, in its outputs' order (2 numbers each).
AXES = ("superior", "posterior")


class OrientationNet(nn.Module):
    """(B, 1, S, S) shots (normalised by `normalise`, on the disk) → (B, 4): the superior and
    the posterior axes projected on each image plane, (u, v) pixel axes each."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 6 * width, 8 * width]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(chans):
            layers += [
                nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(inplace=True),
                nn.Conv2d(b, b, 3, padding=1, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * chans[-1], 64), nn.ReLU(), nn.Linear(64, 4))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
        return self.head(pooled)


def disk(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(size, size) 1 inside the disk inscribed in the image, 0 outside."""
    r = (torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2) / (size / 2)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= 1.0).float()


def normalise(image: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """One shot (H, W) of bone line integrals → (size, size): area-resized (longer side `size`,
    centred on a zero canvas), divided by its 99th percentile, cut to the inscribed disk."""
    resized = area_resized(image.float(), size)
    out = resized.shape
    canvas = torch.zeros(size, size, dtype=torch.float32, device=image.device)
    top, left = (size - out[0]) // 2, (size - out[1]) // 2
    canvas[top : top + out[0], left : left + out[1]] = resized
    canvas = torch.nan_to_num(canvas).clamp_min(0.0)
    scale_value = torch.quantile(canvas.flatten(), 0.99).clamp_min(1e-3)
    return (canvas / scale_value).clamp_max(3.0) * disk(size, image.device)


def transform(images: torch.Tensor, M: torch.Tensor, shift: torch.Tensor | None = None):
    """Images (B, 1, S, S) resampled so that the content at pixel offset p from the centre
    appears at M⁻¹ p (M (2, 2) or (B, 2, 2): turn and mirror, times a zoom), plus `shift`
    (B, 2) in normalised units; cut to the disk. A direction d in the image becomes
    M⁻¹ d / |…| (for M orthogonal up to the zoom)."""
    b, _, s, _ = images.shape
    M = M.expand(b, 2, 2) if M.dim() == 2 else M
    t = torch.zeros(b, 2, 1, device=images.device) if shift is None else shift[:, :, None]
    grid = F.affine_grid(torch.cat([M, t], 2), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    return out * disk(s, images.device)


def _turns() -> list[torch.Tensor]:
    out = []
    for k in range(4):
        c, s = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][k]
        turn = torch.tensor([[c, -s], [s, c]])
        for mirror in (1.0, -1.0):
            out.append(turn @ torch.diag(torch.tensor([mirror, 1.0])))
    return out


_EIGHT_TURNS = _turns()


def image_axes(T_ref_source: np.ndarray) -> np.ndarray:
    """(2, 3): the directions, in the reference frame, of a shot's pixel axes u (columns) and
    v (rows) at its principal point: the source frame's x and y (`geometry.intrinsics`: square
    pixels, no skew, f > 0)."""
    T = np.asarray(T_ref_source, float)
    return np.stack([T[:3, 0], T[:3, 1]])


def targets(T_ref_source: np.ndarray, R_ref_patient: np.ndarray) -> np.ndarray:
    """(4,): what the network should answer for a shot: the patient's superior and posterior
    axes (columns z and y of `R_ref_patient`) projected on the shot's pixel axes."""
    A = image_axes(T_ref_source)
    R = np.asarray(R_ref_patient, float)
    return np.concatenate([A @ R[:, 2], A @ R[:, 1]])


def solve_axes(T_ref_source: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, dict]:
    """R_ref_patient (3, 3) from V poses (V, 4, 4) and the network's answers (V, 4), and how
    well the shots agree: `residual` (RMS of the least-squares fit of the two axes, in the
    answers' units, cosines) and `conditioning` (the smallest singular value of the stacked
    pixel axes over the largest: 0 when the shots are parallel)."""
    A = np.concatenate([image_axes(T) for T in np.asarray(T_ref_source, float)])  # (2V, 3)
    answers = np.asarray(answers, float)
    b_sup = answers[:, 0:2].reshape(-1)
    b_post = answers[:, 2:4].reshape(-1)
    sup = np.linalg.lstsq(A, b_sup, rcond=None)[0]
    post = np.linalg.lstsq(A, b_post, rcond=None)[0]
    residual = float(np.sqrt(np.mean(np.concatenate([A @ sup - b_sup, A @ post - b_post]) ** 2)))
    s = np.linalg.svd(A, compute_uv=False)  # one shot: 2 values, the third is 0
    conditioning = float(s[-1] / s[0]) if len(s) == 3 else 0.0
    z = sup / max(np.linalg.norm(sup), 1e-9)
    y = post - (post @ z) * z
    y = y / max(np.linalg.norm(y), 1e-9)
    x = np.cross(y, z)
    return np.stack([x, y, z], 1), {
        "residual": residual,
        "conditioning": conditioning,
        "superior_norm": float(np.linalg.norm(sup)),
        "posterior_norm": float(np.linalg.norm(post)),
    }


@dataclass
class AxesEstimate:
    """R_ref_patient (3, 3) estimated from the shots, and the fit's figures (`solve_axes`)."""

    R_ref_patient: np.ndarray
    residual: float
    conditioning: float
    # The shorter of the fitted superior and posterior axes before normalising: about 1 when
    # the network reads the shots, short when it is lost (gate.GateLimits.min_orientation_answer).
    answer_length: float = 1.0


class OrientationEstimator:
    """Load once; `estimate(images, T_ref_source)` gives the patient's axes in the poses' frame."""

    def __init__(self, weights: str | Path = DEFAULT_ORIENTATION, device: str = "cpu") -> None:
        self.path = Path(weights)
        bundle = torch.load(self.path, map_location="cpu", weights_only=True)
        if bundle.get("format") != ORIENTATION_FORMAT:
            raise ValueError(f"{self.path}: orientation format {bundle.get('format')}, expected 1")
        self.device = torch.device(device)
        self.net = OrientationNet(int(bundle["width"]))
        self.net.load_state_dict(bundle["state_dict"])
        self.net.to(self.device).eval()
        self.size = int(bundle.get("input_size", INPUT_SIZE))
        self.card = {k: v for k, v in bundle.items() if k != "state_dict"}

    @torch.inference_mode()
    def answers(self, images: list[np.ndarray | torch.Tensor], turns: bool = True) -> np.ndarray:
        """(V, 4): the network's answers, one row per shot. `turns`: the mean of its answers
        on each shot turned by 0°, 90°, 180° and 270°, each also mirrored (the answers turned
        back), which the training's augmentation makes alike."""
        batch = torch.stack(
            [normalise(torch.as_tensor(np.asarray(i, np.float32)), self.size) for i in images]
        )[:, None].to(self.device)
        if not turns:
            return self.net(batch).double().cpu().numpy()
        total = torch.zeros(len(images), 2, 2, dtype=torch.float64)
        for M in _EIGHT_TURNS:
            turned = transform(batch, M.to(batch.device))
            answer = self.net(turned).double().cpu().view(-1, 2, 2)  # (V, axis, uv)
            total += torch.einsum("ij,baj->bai", M.double(), answer)  # M t' = t
        return (total / len(_EIGHT_TURNS)).reshape(-1, 4).numpy()

    def estimate(
        self, images: list[np.ndarray | torch.Tensor], T_ref_source: np.ndarray
    ) -> AxesEstimate:
        R, fit = solve_axes(T_ref_source, self.answers(images))
        length = min(fit["superior_norm"], fit["posterior_norm"])
        return AxesEstimate(R, fit["residual"], fit["conditioning"], length)


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """The angle (degrees) between two unit vectors."""
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0))))


def axis_errors_deg(R: np.ndarray, truth: np.ndarray | None = None) -> tuple[float, float]:
    """How far (degrees) the superior (z) and posterior (y) axes of `R` (columns: the patient's
    axes in the poses' frame) lie from those of `truth` (default: the poses' own axes)."""
    truth = np.eye(3) if truth is None else truth
    return angle_deg(R[:, 2], truth[:, 2]), angle_deg(R[:, 1], truth[:, 1])
