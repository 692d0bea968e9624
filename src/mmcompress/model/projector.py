"""Projectors from fused vision channels into the LLM's embedding space, and the grid-cell channels they can
be given (`projector.positions`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmcompress.registry import Registry

PROJECTORS: Registry = Registry("projector")


def _mlp(in_dim: int, out_dim: int, depth: int) -> nn.Sequential:
    """LLaVA's mlp{depth}x_gelu: Linear, then (GELU, Linear) × (depth − 1)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


PROJECTORS.register("mlp")(_mlp)
PROJECTORS.register("linear")(_mlp)


def cell_positions(grid: tuple[int, int], frequencies: int, device=None) -> torch.Tensor:
    """(H·W, 4F) each common-grid cell's row and column centre in [0, 1] as sin and cos at F octaves
    (π, 2π, 4π, …): a token's place readable from the token itself, where the LLM's 1-D order of a
    row-major grid hides the column."""
    rows, cols = grid
    y = (torch.arange(rows, device=device) + 0.5) / rows  # (H,)
    x = (torch.arange(cols, device=device) + 0.5) / cols  # (W,)
    centres = torch.stack(torch.meshgrid(y, x, indexing="ij"), -1).flatten(0, 1)  # (H·W, 2)
    angles = centres[..., None] * (math.pi * 2.0 ** torch.arange(frequencies, device=device))  # (H·W, 2, F)
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(1)  # (H·W, 4F)
