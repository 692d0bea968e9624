"""Several experts' tokens and signals, arranged as the fusion arranges their tokens.

A fusion either keeps token i of every expert on the same grid cell (channel concatenation, cross-
attention: `shared`) or appends the experts one after another (sequence). Pruning the fused tokens then
reads signals arranged the same way; pruning before fusion keeps one shared selection for aligned experts,
so channel-concatenated experts stay on the same positions, and lets appended experts each keep their own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmcompress.pruning.methods import Pruner
from mmcompress.vision.signals import ExpertTokens


def fused_signals(
    encoded: dict[str, ExpertTokens], shared: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Importance and keys of the fused tokens: shared cells (token i is one grid cell in every expert)
    or appended experts."""
    return shared_signals(encoded) if shared else appended_signals(encoded)


def prune_experts(
    pruner: Pruner,
    encoded: dict[str, ExpertTokens],
    *,
    shared: bool,
    grid: tuple[int, int],
    cells: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """Prune every expert's tokens before fusion: one shared plan when token i is the same cell in every
    expert (importance combined across experts), else each expert keeps its own. → kept tokens, (B, M) mask
    and, given (B, N, P) `cells` (a code per grid cell), the kept tokens' codes in fused order."""
    if shared:
        every = torch.cat([F.normalize(e.tokens.float(), dim=-1) for e in encoded.values()], -1)  # (B, N, ΣC)
        plan = pruner.plan(every, *shared_signals(encoded), grid)  # features-based methods see every expert
        kept_cells = None if cells is None else plan.apply(cells)  # (B, M, P)
        return {name: plan.apply(e.tokens) for name, e in encoded.items()}, plan.mask, kept_cells
    plans = {name: pruner.plan(e.tokens, e.importance, e.keys, grid) for name, e in encoded.items()}
    mask = torch.cat([p.mask for p in plans.values()], 1)  # (B, ΣM_e) in the order tokens are appended
    kept_cells = None if cells is None else torch.cat([p.apply(cells) for p in plans.values()], 1)
    return {name: plans[name].apply(e.tokens) for name, e in encoded.items()}, mask, kept_cells


def shared_signals(encoded: dict[str, ExpertTokens]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Signals for experts whose token i is the same grid cell: importance as the mean of each expert's
    normalised importance, keys as the concatenated unit keys (cosine = mean of the experts' cosines)."""
    parts = list(encoded.values())
    importance = keys = None
    if parts[0].importance is not None:
        importance = torch.stack([_distribution(p.importance) for p in parts]).mean(0)  # (B, N)
    if parts[0].keys is not None:
        keys = torch.cat([F.normalize(p.keys.float(), dim=-1) for p in parts], -1) / math.sqrt(len(parts))
    return importance, keys  # (B, N), (B, N, ΣK)


def appended_signals(encoded: dict[str, ExpertTokens]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Signals for experts appended one after another: each expert's normalised importance in turn, and
    keys in separate channel blocks, so tokens of different experts are never alike."""
    parts = list(encoded.values())
    importance = keys = None
    if parts[0].importance is not None:
        importance = torch.cat([_distribution(p.importance) for p in parts], 1)  # (B, E·N)
    if parts[0].keys is not None:
        widths = [p.keys.shape[-1] for p in parts]
        blocks = [
            F.pad(F.normalize(p.keys.float(), dim=-1), (sum(widths[:i]), sum(widths[i + 1 :])))
            for i, p in enumerate(parts)
        ]
        keys = torch.cat(blocks, 1)  # (B, E·N, ΣK)
    return importance, keys


def _distribution(importance: torch.Tensor) -> torch.Tensor:
    importance = importance.detach().float().clamp(min=0)
    return importance / importance.sum(1, keepdim=True).clamp(min=1e-12)
