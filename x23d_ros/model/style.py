"""Style transfer, fluoroscopy → synthetic: a small image-to-image network (Jecklin et al.
2024's second adaptation) that turns a fluoroscopy display frame into the bone-only line
integrals (μ·L) the reconstruction networks were trained on, before anything else sees it.

It reads both domains: a synthetic shot comes back nearly as it went in (the identity the
training also teaches), so a shot set of unknown domain does not break it. Outside the
collimated field it answers 0 (no bone seen), which is what it is taught there.

Architecture: a small classifier tells a bone-dark display (an inverted C-arm display) from a
bone-bright one and the frame is turned bone-bright; then the frame is folded 2×2 into four
channels (pixel unshuffle), a three-level U-Net with batch normalisation works at half
resolution, a global context (the features' mean over the image) is added at the bottom, and
the result is unfolded to full resolution; softplus keeps μ·L ≥ 0. Fully convolutional, but
trained at one matrix (`trained_image_size` in its file): `StyleTransfer` resamples other
matrices to it and back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STYLE_FORMAT = 1
#: How a fluoroscopy frame shows bone: decided per frame by the network, or declared.
POLARITIES = ("auto", "bone_bright", "bone_dark")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_STYLE = WEIGHTS_DIR / "style.pt"


@dataclass(frozen=True)
class StyleConfig:
    width: int = 16  # channels at half resolution; ×2 per level down
    levels: int = 3
    norm: bool = False  # batch normalisation in every block

    def as_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int, norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(*layers)


class StyleNet(nn.Module):
    """(B, 1, H, W) fluoroscopy display values in [0, 1] (or synthetic μ·L) → (B, 1, H, W) μ·L."""

    def __init__(self, config: StyleConfig = StyleConfig()) -> None:
        super().__init__()
        self.config = config
        w, n = config.width, config.levels
        chans = [w * 2 ** min(i, 2) for i in range(n + 1)]  # 16, 32, 64, 64
        self.inp = _block(4, chans[0], config.norm)
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1),
                nn.LeakyReLU(0.1, inplace=True),
                _block(chans[i + 1], chans[i + 1], config.norm),
            )
            for i in range(n)
        )
        self.context = nn.Linear(chans[n], chans[n])
        self.up = nn.ModuleList(
            _block(chans[i + 1] + chans[i], chans[i], config.norm) for i in reversed(range(n))
        )
        self.out = nn.Conv2d(chans[0], 4, 3, padding=1)
        # Polarity: whether a display frame shows bone dark (an inverted display) — a small
        # classifier on the frame at a quarter of its resolution, trained on the C-arm's
        # inversion flag; such frames are turned bone-bright before the U-Net.
        self.polarity = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.polarity_head = nn.Linear(32, 1)

    def bone_dark_logit(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) logit that each frame of `x` (B, 1, H, W) shows bone dark."""
        f = self.polarity(F.avg_pool2d(x, 4))
        return self.polarity_head(f.mean(dim=(2, 3)))[:, 0]

    def forward(self, x: torch.Tensor, bone_dark: torch.Tensor | None = None) -> torch.Tensor:
        """μ·L of each frame; `bone_dark` (B,) bool, when known, else the classifier's."""
        if bone_dark is None:
            bone_dark = self.bone_dark_logit(x) > 0
        x = torch.where(bone_dark[:, None, None, None], 1.0 - x, x)
        return self.translate(x)

    @property
    def multiple(self) -> int:
        """The image sides are padded to a multiple of this."""
        return 2 ** (self.config.levels + 1)

    def translate(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net: bone-bright frames (or synthetic shots) → μ·L."""
        h, w = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        f = self.inp(F.pixel_unshuffle(x, 2))
        skips = [f]
        for down in self.down:
            f = down(f)
            skips.append(f)
        f = f + self.context(f.mean(dim=(2, 3)))[:, :, None, None]
        for up, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            f = F.interpolate(f, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            f = up(torch.cat([f, skip], 1))
        y = F.softplus(F.pixel_shuffle(self.out(f), 2))
        return y[..., :h, :w]


class StyleTransfer:
    """A trained StyleNet from its file, run on a list of shots: on the GPU when `device` is
    one, on the CPU otherwise."""

    def __init__(self, path: str | Path = "default", device: str | torch.device = "cpu") -> None:
        path = DEFAULT_STYLE if str(path) == "default" else Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no style-transfer weights at {path}")
        bundle = torch.load(path, map_location="cpu", weights_only=True)
        if bundle.get("format") != STYLE_FORMAT or bundle.get("kind") != "style":
            raise ValueError(f"{path}: not a style-transfer file (format {STYLE_FORMAT})")
        self.path = path
        self.device = torch.device(device)
        self.net = StyleNet(StyleConfig(**bundle["net"]))
        self.net.load_state_dict(bundle["state_dict"])
        self.net.to(self.device).eval()
        self.card = {k: v for k, v in bundle.items() if k not in ("state_dict",)}
        # The detector's width in pixels the network was trained at: shots of another matrix
        # (the same detector read at 512² or 1024²) are resampled to it and the result back,
        # so that blur, noise grain and edge enhancement have the sizes it learnt.
        self.trained_size = int(bundle.get("trained_image_size", 0))
        self.from_domain = str(bundle.get("from_domain", "realistic"))
        self.to_domain = str(bundle.get("to_domain", "synthetic"))

    @torch.inference_mode()
    def __call__(
        self, images: list[np.ndarray], polarity: str = "auto"
    ) -> tuple[list[np.ndarray], list[float]]:
        """Each (H, W) display frame in [0, 1] → (H, W) float32 μ·L; shots of one size run
        as one batch. `polarity`: "auto" (the classifier decides per frame), "bone_bright" or
        "bone_dark" (declared by the C-arm's driver). Also returned: per frame, the
        classifier's probability that it shows bone dark (what the gate judges)."""
        if polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}, not {polarity!r}")
        out: list[np.ndarray | None] = [None] * len(images)
        bone_dark_p = [0.0] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(np.shape(image), []).append(i)
        for (h, w), idx in by_size.items():
            x = torch.from_numpy(np.stack([np.asarray(images[i], np.float32) for i in idx]))
            x = x[:, None].to(self.device)
            scale = self.trained_size / max(h, w) if self.trained_size else 1.0
            resample = abs(scale - 1.0) > 0.1
            if resample:
                size = (max(16, round(h * scale)), max(16, round(w * scale)))
                x = F.interpolate(x, size=size, mode="bilinear", antialias=True)
            p = torch.sigmoid(self.net.bone_dark_logit(x))
            dark = p > 0.5 if polarity == "auto" else torch.full_like(p, polarity == "bone_dark")
            y = self.net(x, bone_dark=dark.bool())
            if resample:
                y = F.interpolate(y, size=(h, w), mode="bilinear")
            y = y[:, 0].float().cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = y[j]
                bone_dark_p[i] = float(p[j])
        return out, bone_dark_p  # type: ignore[return-value]


__all__ = [
    "DEFAULT_STYLE",
    "POLARITIES",
    "STYLE_FORMAT",
    "StyleConfig",
    "StyleNet",
    "StyleTransfer",
]
