"""X23D-style multi-view stereo network, sized for 2 CPU cores (shared/DESIGN.md §6).

images (B, V, H, W) ─ 2D encoder (shared weights) ─► features (B, V, C, H/2, W/2)
        ─ unproject through P (scaled to H/2) onto the grid ─► fuse (mean, variance, coverage)
        ─ 3D U-Net ─► logits (B, classes, X, Y, Z)

The calibration enters through P alone, so any number of views (2–8) and any poses work with
the same weights; fusion is symmetric in the views.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from x23d_ros.model.unproject import fuse, scale_projection, unproject


@dataclass(frozen=True)
class NetConfig:
    """Sizes of the network; stored with the weights."""

    features_2d: int = 16
    channels_3d: int = 16
    classes: int = 1  # 1: occupancy of one structure; 6: background + L1..L5
    image_norm: float = 1.0  # images are divided by this before the encoder
    # 3D U-Net levels below full resolution: 2, or 3 (a 1/8-resolution level whose output is
    # added to the 1/4 level through a zero-initialised convolution, so that a trained 2-level
    # network grows into a 3-level one without changing its output; `model.grow`).
    levels: int = 2
    # Direction-aware fusion: before the views are averaged, each view's unprojected features
    # f go through f + Σ_k e_k·B_k f, e the 6 components of d dᵀ for the view's ray direction d
    # (source → grid centre, reference frame; d dᵀ so that a view and its opposite agree) and
    # B_k learned C×C matrices that start at zero. Mean and variance alone cannot tell which
    # view says what; this lets the network weigh a lateral view's evidence unlike an AP's.
    view_directions: bool = False
    # Channels of the 3D U-Net's full-resolution level (its first two convolutions, the last
    # one and the head); 0: `channels_3d`. On 2 AVX2 cores two thirds of the fine stage's
    # multiply-adds are at full resolution (README, "Latency"); 8 there instead of 16 costs a
    # third of them. A trained network narrows to it through `model.narrow`.
    channels_full: int = 0

    @property
    def full_channels(self) -> int:
        """The full-resolution level's channels."""
        return self.channels_full or self.channels_3d

    def same_network(self, other: NetConfig) -> bool:
        """Whether `other` builds the same network (`channels_full` 0 and `channels_3d` alike)."""
        return replace(self, channels_full=self.full_channels) == replace(
            other, channels_full=other.full_channels
        )

    def as_dict(self) -> dict:
        # channels_full only where it is set: files of the full-width network stay readable
        # by code from before it existed.
        out = asdict(self)
        if not self.channels_full:
            del out["channels_full"]
        return out


def _conv2d(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


class OneDNNConv3d(nn.Conv3d):
    """Conv3d that, in inference on the CPU, always runs on oneDNN.

    PyTorch picks oneDNN for a float32 batch of one only when N·C·D·H > 20 480, a rule tuned
    for 2D; below it a 3D convolution falls back to the im2col path, 10–20× slower here (the
    coarse stage's 8→8 convolution at 48³: 112 ms against 5–8 ms). Training keeps PyTorch's
    own choice (and its autograd).
    """

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_grad_enabled()
            and self.padding_mode == "zeros"
            and torch.backends.mkldnn.is_available()
        ):
            return torch.mkldnn_convolution(
                x, weight, bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(x, weight, bias)


def _conv3d(cin: int, cout: int, stride: int = 1, groups: int = 0) -> nn.Sequential:
    return nn.Sequential(
        OneDNNConv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups or min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


class Encoder2D(nn.Module):
    """Image (N, 1, H, W) → features (N, C, H/2, W/2), with a 1/8-resolution context path."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv2d(1, c), _conv2d(c, c, stride=2))  # 1/2
        self.down = nn.Sequential(
            _conv2d(c, 2 * c, stride=2), _conv2d(2 * c, 2 * c, stride=2), _conv2d(2 * c, 2 * c)
        )
        self.merge = _conv2d(3 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.stem(x)
        context = nn.functional.interpolate(
            self.down(half), size=half.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.merge(torch.cat([half, context], dim=1))


class Residual3D(nn.Module):
    """x + f(x), f: down to half resolution at twice the channels, two convolutions, back up,
    and a 1×1×1 convolution that starts at zero (so f starts as the zero function)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.down = nn.Sequential(_conv3d(c, 2 * c, stride=2), _conv3d(2 * c, 2 * c))
        self.up = nn.ConvTranspose3d(2 * c, c, 2, stride=2)
        self.out = nn.Conv3d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(torch.relu(self.up(self.down(x))))


def full_groups(c: int, c_full: int) -> int:
    """GroupNorm groups of a full-resolution level of `c_full` channels in a U-Net of `c`: as
    many channels a group as `GroupNorm(min(8, c), c)` has (the default, `c_full == c`, is that
    same norm). Why: narrowed to 8 of 16 channels with one channel a group (`min(8, 8)`), the
    fine stage fitted one batch from a random start far more slowly than with the full width's
    pairs (loss 0.93 against 0.82 after 100 steps, and 16 channels in single groups 0.85
    against 0.59 in pairs; one seed, one batch: model card, run `k7`; `bench/one_batch_fit.py`)."""
    if c_full == c:
        return min(8, c)
    per_group = max(1, c // min(8, c))
    if c_full % per_group:
        raise ValueError(
            f"the full-resolution level's {c_full} channels must divide into groups of "
            f"{per_group} (as the U-Net's {c})"
        )
    return c_full // per_group


class UNet3D(nn.Module):
    """A 3D U-Net with 2 or 3 levels below full resolution; the grid side must be divisible by
    2^levels. `c` channels at half resolution (2c, 4c below), `c_full` (default `c`) at full
    resolution, normalised in groups of as many channels as a level of `c` has (so a narrower
    full-resolution level is not left with one channel a group: `full_groups`)."""

    def __init__(
        self, cin: int, c: int, classes: int, levels: int = 2, c_full: int | None = None
    ) -> None:
        super().__init__()
        if levels not in (2, 3):
            raise ValueError(f"levels must be 2 or 3, got {levels}")
        c0 = c_full or c
        g0 = full_groups(c, c0)
        self.enc0 = nn.Sequential(_conv3d(cin, c0, groups=g0), _conv3d(c0, c0, groups=g0))
        self.enc1 = nn.Sequential(_conv3d(c0, 2 * c, stride=2), _conv3d(2 * c, 2 * c))
        enc2 = [_conv3d(2 * c, 4 * c, stride=2), _conv3d(4 * c, 4 * c)]
        if levels == 3:
            enc2.append(Residual3D(4 * c))
        self.enc2 = nn.Sequential(*enc2)
        self.up1 = nn.ConvTranspose3d(4 * c, 2 * c, 2, stride=2)
        self.dec1 = _conv3d(4 * c, 2 * c)
        self.up0 = nn.ConvTranspose3d(2 * c, c0, 2, stride=2)
        self.dec0 = _conv3d(2 * c0, c0, groups=g0)
        self.head = nn.Conv3d(c0, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        d1 = self.dec1(torch.cat([self.up1(e2), e1], dim=1))
        d0 = self.dec0(torch.cat([self.up0(d1), e0], dim=1))
        return self.head(d0)


def direction_components(P: torch.Tensor, centre_mm: torch.Tensor) -> torch.Tensor:
    """(B, V, 6): the unique components of d dᵀ, d the unit ray from each view's source to
    `centre_mm` (B, 3); P (B, V, 3, 4). The off-diagonal terms carry √2, so that the six
    components have the norm of d dᵀ (1), and d and −d give the same six."""
    M, p4 = P[..., :3], P[..., 3]
    source = -torch.linalg.solve(M, p4[..., None])[..., 0]  # P·[source; 1] = 0
    d = centre_mm[:, None, :].to(P.dtype) - source
    d = d / torch.linalg.norm(d, dim=-1, keepdim=True)
    x, y, z = d.unbind(-1)
    r2 = 2.0**0.5
    return torch.stack([x * x, y * y, z * z, r2 * x * y, r2 * x * z, r2 * y * z], dim=-1)


class X23DNet(nn.Module):
    def __init__(self, config: NetConfig = NetConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder2D(config.features_2d)
        self.decoder = UNet3D(
            2 * config.features_2d + 1,
            config.channels_3d,
            config.classes,
            config.levels,
            config.full_channels,
        )
        if config.view_directions:
            c = config.features_2d
            self.direction_mix = nn.Parameter(torch.zeros(6, c, c))

    def forward(
        self, images: torch.Tensor, P: torch.Tensor, points_mm: torch.Tensor
    ) -> torch.Tensor:
        """images (B, V, H, W); P (B, V, 3, 4) for those images; points_mm (B, X, Y, Z, 3) the
        grid's voxel centres. Returns logits (B, classes, X, Y, Z)."""
        b, v, h, w = images.shape
        features = self.encoder((images / self.config.image_norm).reshape(b * v, 1, h, w))
        features = features.reshape(b, v, *features.shape[1:])
        scale = features.shape[-1] / w
        P_features = scale_projection(P, scale, strided=True).to(features.dtype)
        values, mask = unproject(features, P_features, points_mm)
        if self.config.view_directions:
            centre = points_mm.reshape(b, -1, 3).mean(dim=1)
            e = direction_components(P, centre).to(values.dtype)  # (B, V, 6)
            mix = torch.einsum("bvk,kij->bvij", e, self.direction_mix.to(values.dtype))
            # Linear in the features, so voxels a view does not see stay 0.
            values = values + torch.einsum("bvij,bvjxyz->bvixyz", mix, values)
        return self.decoder(fuse(values, mask))  # channels-last


def load_network(net: dict, state_dict: dict, device: torch.device | str = "cpu") -> X23DNet:
    """A trained network for inference: built from its stored config (`NetConfig.as_dict`),
    its weights loaded, on `device`, in eval mode."""
    model = X23DNet(NetConfig(**net))
    model.load_state_dict(state_dict)
    return model.to(device).eval()
