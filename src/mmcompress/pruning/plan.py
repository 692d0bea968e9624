"""A pruning plan: which visual tokens reach the LLM, and what they carry of the tokens left out.

Output slot m of image b is the weighted sum of the source tokens the plan sends to it. One gather and one
scatter-add apply it, so the kept count may differ per image (padded slots are masked and never attended),
no Python loop runs over the batch or the tokens, and the same plan applied to every expert keeps
channel-concatenated experts on the same positions. The helpers below build plans' selections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Plan:
    """Output slot `dst` receives `weight · token[src]`; slots where `mask` is False are padding."""

    dst: torch.Tensor  # (B, P) long
    src: torch.Tensor  # (B, P) long
    weight: torch.Tensor  # (B, P)
    mask: torch.Tensor  # (B, M) bool

    def apply(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) → (B, M, C)."""
        channels = tokens.shape[-1]
        picked = tokens.gather(1, self.src[..., None].expand(-1, -1, channels))  # (B, P, C)
        picked = picked * self.weight[..., None].to(tokens.dtype)
        out = tokens.new_zeros(tokens.shape[0], self.mask.shape[1], channels)
        return out.scatter_add(1, self.dst[..., None].expand(-1, -1, channels), picked)  # (B, M, C)

    @classmethod
    def keep(cls, keep: torch.Tensor, priority: torch.Tensor | None = None) -> Plan:
        """Keep the tokens where `keep` (B, N) is True, unchanged, in grid order (or by `priority`)."""
        index, mask = kept_slots(keep, priority)  # (B, M), (B, M)
        slots = torch.arange(index.shape[1], device=keep.device).expand_as(index)
        return cls(slots, index, mask.float(), mask)


def kept_slots(keep: torch.Tensor, priority: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept tokens' indices packed to the front, (B, M) with M the largest count, and their mask."""
    batch, tokens = keep.shape
    order_key = (
        priority if priority is not None else torch.arange(tokens, device=keep.device).expand(batch, -1)
    )
    order = torch.where(keep, order_key.float(), math.inf).argsort(dim=1, stable=True)  # kept first
    counts = keep.sum(1)  # (B,)
    width = int(counts.max())
    mask = torch.arange(width, device=keep.device)[None] < counts[:, None]  # (B, M)
    return order[:, :width], mask


def rank_descending(values: torch.Tensor) -> torch.Tensor:
    """(B, N) → each token's rank, 0 for the largest value (ties: the earlier token first)."""
    return values.argsort(dim=1, descending=True, stable=True).argsort(dim=1)


def budget(tokens: int, ratio: float) -> int:
    """Tokens kept of `tokens` at `ratio`: at least one, at most all."""
    return max(1, min(tokens, round(ratio * tokens)))


def lattice(grid: tuple[int, int], count: int, device=None) -> torch.Tensor:
    """Exactly `count` grid positions (sorted, row-major indices) spread evenly over the 2-D grid."""
    rows, cols = grid
    count = min(count, rows * cols)
    r = min(rows, max(1, round(math.sqrt(count * rows / cols))))
    c = min(cols, math.ceil(count / r))
    r = min(rows, math.ceil(count / c))
    ys = ((torch.arange(r, device=device) + 0.5) * rows / r).long()  # (r,)
    xs = ((torch.arange(c, device=device) + 0.5) * cols / c).long()  # (c,)
    points = (ys[:, None] * cols + xs[None]).flatten()  # (r·c,) ≥ count
    return points[(torch.arange(count, device=device) * len(points) / count).long()]


def stride_within(grid: tuple[int, int], room: torch.Tensor) -> torch.Tensor:
    """(B,) the smallest stride whose strided_lattice has at most room[b] points (1 where room[b] < 1)."""
    rows, cols = grid
    strides = torch.arange(1, max(rows, cols) + 1, device=room.device)  # (S,)
    sizes = -((strides // 2 - rows) // strides) * -((strides // 2 - cols) // strides)  # (S,) lattice points
    return strides[(sizes[None] <= room[:, None]).float().argmax(1)]  # (B,)


def strided_lattice(grid: tuple[int, int], stride: torch.Tensor) -> torch.Tensor:
    """(B, N) mask of every `stride[b]`-th row and column (centred), a per-image regular lattice."""
    rows, cols = grid
    position = torch.arange(rows * cols, device=stride.device)
    y, x = position // cols, position % cols  # (N,)
    step = stride[:, None]  # (B, 1)
    return ((y[None] - step // 2) % step == 0) & ((x[None] - step // 2) % step == 0)
