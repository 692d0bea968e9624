"""The common token grid: every expert's native patch map is brought to one (H, W) grid so fusion can align
token i of every expert on the same image region (EAGLE's 32×32 = 1024 tokens).

An expert hands over a `PatchMap`: a (B, C, h, w) map plus, for variable-resolution experts (Pix2Struct),
each image's valid extent inside the padded map, and, for experts with a summary query ([CLS]) when
pruning asks, that query's attention over the patches and their keys. Two ways onto the grid, chosen per
expert in its config:
`interpolate` (bilinear, antialiased when shrinking; per-image extents resampled with `grid_sample`) and
`unshuffle` (pixel-unshuffle by an integer factor, trading resolution for channels, as EAGLE does for SAM).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmcompress.errors import ConfigError

GRID_METHODS = ("interpolate", "unshuffle")


@dataclass
class PatchMap:
    """An expert's features on its native grid."""

    features: torch.Tensor  # (B, C, h, w)
    extent: torch.Tensor | None = None  # (B, 2) valid rows, cols per image; None = the whole map
    cls_attention: torch.Tensor | None = None  # (B, h·w) [CLS] (or pooling probe) → patch attention
    keys: torch.Tensor | None = None  # (B, h·w, K) the attending layer's keys of the patches


def grid_channels(channels: int, native: tuple[int, int], target: tuple[int, int], method: str) -> int:
    """Channels per grid token after `method`, checking that the mapping is possible."""
    if method not in GRID_METHODS:
        raise ConfigError(f"unknown grid method '{method}'; choose one of {', '.join(GRID_METHODS)}")
    if method == "interpolate":
        return channels
    factor = unshuffle_factor(native, target)
    return channels * factor * factor


def unshuffle_factor(native: tuple[int, int], target: tuple[int, int]) -> int:
    """The integer factor r with native = r · target on both sides, or a ConfigError naming the fix."""
    (h, w), (rows, cols) = native, target
    if h % rows or w % cols or h // rows != w // cols or h < rows:
        raise ConfigError(
            f"cannot pixel-unshuffle a {h}×{w} expert grid onto a {rows}×{cols} grid: the native grid must be "
            "an integer multiple of it on both sides; set grid to a divisor or use to_grid=interpolate"
        )
    return h // rows


def to_grid(patches: PatchMap, target: tuple[int, int], method: str) -> torch.Tensor:
    """(B, C, h, w) native map → (B, H·W, C') tokens on the common grid, row-major."""
    features = patches.features
    if method == "unshuffle":
        if patches.extent is not None:
            raise ConfigError(
                "a variable-resolution expert cannot be pixel-unshuffled; use to_grid=interpolate"
            )
        factor = unshuffle_factor(tuple(features.shape[-2:]), target)
        grid = F.pixel_unshuffle(features, factor) if factor > 1 else features  # (B, C·r², H, W)
    elif patches.extent is not None:
        grid = _resample_extents(features, patches.extent, target)  # (B, C, H, W)
    elif tuple(features.shape[-2:]) == tuple(target):
        grid = features
    else:
        shrinking = features.shape[-2] > target[0] or features.shape[-1] > target[1]
        grid = F.interpolate(
            features.float(), size=target, mode="bilinear", align_corners=False, antialias=shrinking
        ).to(features.dtype)  # (B, C, H, W)
    return grid.flatten(2).transpose(1, 2)  # (B, H·W, C')


def _resample_extents(features: torch.Tensor, extent: torch.Tensor, target: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of each image's valid top-left region of a padded map, all images at once."""
    batch, _, height, width = features.shape
    rows, cols = target
    # Target cell centres as (fractional) indices into each image's valid region, clamped inside it so
    # padding never leaks in, then as the padded map's [-1, 1] coordinates (align_corners=False).
    valid = extent.to(features.device, torch.float32)  # (B, 2)
    y = (torch.arange(rows, device=features.device) + 0.5) / rows  # (H,)
    x = (torch.arange(cols, device=features.device) + 0.5) / cols  # (W,)
    y = (y[None] * valid[:, :1] - 0.5).clamp(min=0).minimum(valid[:, :1] - 1)  # (B, H)
    x = (x[None] * valid[:, 1:] - 0.5).clamp(min=0).minimum(valid[:, 1:] - 1)  # (B, W)
    y, x = (y + 0.5) / height * 2 - 1, (x + 0.5) / width * 2 - 1
    sample_at = torch.stack(
        [x[:, None, :].expand(batch, rows, cols), y[:, :, None].expand(batch, rows, cols)], dim=-1
    )  # (B, H, W, 2) as (x, y)
    out = F.grid_sample(
        features.float(), sample_at, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.to(features.dtype)  # (B, C, H, W)
