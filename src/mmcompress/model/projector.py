"""Projectors from fused vision channels into the LLM's embedding space."""

from __future__ import annotations

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
