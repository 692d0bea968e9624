"""Visual-token pruning: which visual tokens reach the LLM, and what they carry of the tokens left out.

Every method builds a `Plan`: output slot m of image b is the weighted sum of the source tokens the plan
sends to it. One gather and one scatter-add apply it, so the kept count may differ per image (padded
slots are masked and never attended), no Python loop runs over the batch or the tokens, and the same plan
applied to every expert keeps channel-concatenated experts on the same positions.

Methods (`pruning=`): none, random, spatial (a uniform lattice), topk (by importance), prumerge (IQR
outliers of the importance, each merged with its key-nearest neighbours), prumerge_plus (plus a spatially
uniform supplement) and tome (bipartite soft matching, repeated until the budget). Fixed-budget methods
keep `ratio` of the tokens; PruMerge's count is adaptive, with `ratio` as an optional cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from mmcompress.errors import ConfigError
from mmcompress.registry import Registry
from mmcompress.signals import ExpertTokens

PRUNERS: Registry[type[Pruner]] = Registry("pruning method")
WHERE = ("fused", "experts")  # pruning.where
VARIANTS = ("paper", "release")  # pruning.variant
RELEASE_K, RELEASE_TOKENS = 32, 576  # PruMerge's neighbour count on CLIP-L/336's 24×24 grid


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


def strided_lattice(grid: tuple[int, int], stride: torch.Tensor) -> torch.Tensor:
    """(B, N) mask of every `stride[b]`-th row and column (centred), a per-image regular lattice."""
    rows, cols = grid
    position = torch.arange(rows * cols, device=stride.device)
    y, x = position // cols, position % cols  # (N,)
    step = stride[:, None]  # (B, 1)
    return ((y[None] - step // 2) % step == 0) & ((x[None] - step // 2) % step == 0)


def iqr_outliers(attention: torch.Tensor, pooled: bool = False) -> torch.Tensor:
    """Tokens above Q3 + 1.5·IQR of the attention (B, N): (B,) counts per image, or (1,) over the whole
    batch when `pooled` (the release's behaviour: one count shared by every image)."""
    values = attention.double().flatten()[None] if pooled else attention.double()  # (B', n)
    quartiles = torch.tensor([0.25, 0.75], dtype=values.dtype, device=values.device)
    q1, q3 = torch.quantile(values, quartiles, dim=1)  # (B',) each, linear interpolation as numpy
    return (values > (q3 + 1.5 * (q3 - q1))[:, None]).sum(1)


def prumerge(
    features: torch.Tensor,
    keys: torch.Tensor,
    cls_attention: torch.Tensor,
    *,
    plus: bool = False,
    variant: str = "paper",
    k: int = RELEASE_K,
    cap: int | None = None,
    grid: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PruMerge (and PruMerge+) on (B, N, C) features, (B, N, K) keys and (B, N) CLS attention.

    Returns (tokens (B, M, C), mask (B, M) bool). `variant="paper"`: per-image IQR outliers, each kept
    token becomes the attention-weighted average of itself and its k key-nearest tokens, grid order.
    `variant="release"`: the released algorithm — IQR pooled over the batch, kept tokens in descending
    attention, neighbours added with unnormalised weights, and one extra token pooling every pruned token.
    """
    side = math.isqrt(features.shape[1])
    plan = prumerge_plan(
        cls_attention, keys, plus=plus, variant=variant, k=k, cap=cap, grid=grid or (side, side)
    )
    return plan.apply(features), plan.mask


def prumerge_plan(
    attention: torch.Tensor,
    keys: torch.Tensor,
    *,
    plus: bool,
    variant: str,
    k: int,
    cap: int | None,
    grid: tuple[int, int],
    supplement: float = 3.0,
) -> Plan:
    """The PruMerge plan: which tokens survive (IQR, plus a lattice for PruMerge+) and their merges."""
    if variant not in VARIANTS:
        raise ConfigError(f"pruning.variant={variant}; choose one of {', '.join(VARIANTS)}")
    attention = attention.detach().float()  # (B, N)
    batch, tokens = attention.shape
    rank = rank_descending(attention)  # (B, N)
    if variant == "paper":
        count = iqr_outliers(attention).clamp(min=1)  # (B,)
        if cap is not None:
            count = count.clamp(max=cap)
        keep = rank < count[:, None]  # (B, N): the outliers are the top-`count` tokens
        if plus:  # a lattice of at most about `supplement` points per outlier
            stride = (tokens / (supplement * count)).sqrt().ceil().clamp(min=1).long()  # (B,)
            keep |= strided_lattice(grid, stride)
        priority = None  # grid order
    else:
        ratio = int(iqr_outliers(attention, pooled=True)) / (batch * tokens)
        count = max(1, int(tokens * ratio))
        if cap is not None:
            count = min(count, cap)
        keep = rank < count
        priority = rank.float()  # descending attention, as topk returns them
        if plus:
            step = max(1, int(int(1 / max(ratio, 1 / tokens)) / 3))
            positions = torch.arange(tokens, device=keep.device)
            grid_points = (positions % step == 0) & (positions < tokens - 1)  # arange(0, N−1, step)
            supplement_mask = grid_points[None] & ~keep
            keep = keep | supplement_mask
            priority = torch.where(supplement_mask, count + positions[None].float(), priority)
    return merge_plan(attention, keys, keep, priority, k=min(k, tokens - 1), release=variant == "release")


def merge_plan(
    attention: torch.Tensor,
    keys: torch.Tensor,
    keep: torch.Tensor,
    priority: torch.Tensor | None,
    *,
    k: int,
    release: bool,
) -> Plan:
    """Each kept token gathers its k key-nearest other tokens (kept or not), weighted by attention."""
    index, mask = kept_slots(keep, priority)  # (B, M), (B, M)
    batch, slots = index.shape
    unit = F.normalize(keys.detach().float(), dim=-1)  # (B, N, K)
    similarity = unit.gather(1, index[..., None].expand(-1, -1, unit.shape[-1])) @ unit.transpose(
        1, 2
    )  # (B, M, N)
    similarity.scatter_(2, index[..., None], -math.inf)  # never its own neighbour
    neighbours = similarity.topk(k, dim=2).indices  # (B, M, k)
    neighbour_weight = attention.gather(1, neighbours.flatten(1)).view(batch, slots, k)  # (B, M, k)
    self_weight = torch.ones_like(index, dtype=attention.dtype) if release else attention.gather(1, index)
    weight = torch.cat([self_weight[..., None], neighbour_weight], -1)  # (B, M, 1+k)
    if not release:
        weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)  # a weighted average
    weight = weight * mask[..., None]
    src = torch.cat([index[..., None], neighbours], -1)  # (B, M, 1+k)
    dst = torch.arange(slots, device=keep.device)[None, :, None].expand_as(src)
    plan = Plan(dst.flatten(1), src.flatten(1), weight.flatten(1), mask)
    if not release:
        return plan
    # The release appends one token: the attention-weighted sum of every pruned token.
    counts = keep.sum(1)  # (B,) the extra token sits right after each image's own tokens
    tokens = keep.shape[1]
    extra_dst = counts[:, None].expand(-1, tokens)
    extra_src = torch.arange(tokens, device=keep.device).expand(batch, -1)
    extra_weight = attention * ~keep
    mask = torch.arange(slots + 1, device=keep.device)[None] <= counts[:, None]  # (B, M+1)
    return Plan(
        torch.cat([plan.dst, extra_dst], 1),
        torch.cat([plan.src, extra_src], 1),
        torch.cat([plan.weight, extra_weight], 1),
        mask,
    )


def tome_plan(keys: torch.Tensor, count: int) -> Plan:
    """ToMe's bipartite soft matching, repeated until `count` tokens remain (at most half go per round):
    alternate tokens form sets A and B, the A tokens most similar to their best B match merge into it,
    and every output is the mean of the original tokens it absorbed, in grid order of its first token."""
    unit = F.normalize(keys.detach().float(), dim=-1)  # (B, N, K)
    batch, tokens, width = unit.shape
    group = torch.arange(tokens, device=unit.device).expand(batch, -1).clone()  # (B, N) original → current
    current = tokens
    while current > count:
        size = unit.new_zeros(batch, current).scatter_add(1, group, torch.ones_like(unit[..., 0]))  # (B, n)
        merged_keys = unit.new_zeros(batch, current, width).scatter_add(
            1, group[..., None].expand(-1, -1, width), unit
        )  # (B, n, K) sums; their direction is the mean's
        merged_keys = F.normalize(merged_keys / size[..., None], dim=-1)
        set_a, set_b = merged_keys[:, ::2], merged_keys[:, 1::2]  # (B, nA, K), (B, nB, K)
        best, match = (set_a @ set_b.transpose(1, 2)).max(-1)  # (B, nA)
        n_a, n_b = set_a.shape[1], set_b.shape[1]
        r = min(current - count, n_a)
        edge_rank = rank_descending(best)  # (B, nA): 0 = the most similar pair, merged first
        a_target = torch.where(edge_rank < r, n_a - r + match, edge_rank - r)  # (B, nA) new index
        b_target = (n_a - r + torch.arange(n_b, device=unit.device)).expand(batch, -1)  # (B, nB)
        remap = torch.empty_like(group[:, :current])  # (B, n): A tokens are the even ones
        remap[:, 0::2], remap[:, 1::2] = a_target, b_target
        group = remap.gather(1, group)  # (B, N)
        current -= r
    positions = torch.arange(tokens, device=unit.device).expand(batch, -1)
    first = torch.full((batch, current), tokens, device=unit.device).scatter_reduce(
        1, group, positions, "amin"
    )
    slot = rank_descending(-first.float())  # (B, M): outputs in grid order of their first token
    dst = slot.gather(1, group)  # (B, N)
    size = unit.new_zeros(batch, current).scatter_add(1, dst, torch.ones_like(unit[..., 0]))  # (B, M)
    mask = torch.ones(batch, current, dtype=torch.bool, device=unit.device)
    return Plan(dst, positions, 1 / size.gather(1, dst), mask)


# ---- the configured pruner ------------------------------------------------------------------------------


class Pruner(nn.Module):
    """A method with its settings; `needs` names the signals it reads (so experts compute only those)."""

    needs: frozenset[str] = frozenset()

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.where = str(cfg.get("where", "fused"))
        if self.where not in WHERE:
            raise ConfigError(f"pruning.where={self.where}; choose one of {', '.join(WHERE)}")
        ratio = cfg.get("ratio")
        if ratio is not None and (
            isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1
        ):
            raise ConfigError(f"pruning.ratio={ratio!r} must be a fraction of tokens kept in (0, 1]")
        self.ratio = None if ratio is None else float(ratio)

    def plan(self, tokens, importance, keys, grid: tuple[int, int]) -> Plan:
        """The plan for (B, N, C) `tokens` on a (H, W) grid, from their (B, N) importance and (B, N, K) keys."""
        raise NotImplementedError

    def forward(self, tokens, importance, keys, grid) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, C) tokens on a (H, W) grid → (B, M, C) kept tokens and their (B, M) mask."""
        plan = self.plan(tokens, importance, keys, grid)
        return plan.apply(tokens), plan.mask


@PRUNERS.register("none")
class KeepAll(Pruner):
    """Every token is kept; the mask exists so variable-count methods share one interface."""

    def __init__(self, cfg: DictConfig | None = None) -> None:
        super().__init__(cfg or DictConfig({}))

    def plan(self, tokens, importance, keys, grid):
        return Plan.keep(torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def forward(self, tokens, importance=None, keys=None, grid=None):
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # (B, N)


class FixedBudget(Pruner):
    """Keeps round(ratio · N) tokens of every image."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        if self.ratio is None:
            raise ConfigError(
                f"pruning={cfg.name} keeps a fixed fraction: set pruning.ratio, e.g. pruning.ratio=0.25"
            )

    def count(self, grid: tuple[int, int]) -> int:
        return budget(grid[0] * grid[1], self.ratio)


@PRUNERS.register("random")
class RandomTokens(FixedBudget):
    """A uniformly random subset per image (a surprisingly strong baseline)."""

    def plan(self, tokens, importance, keys, grid):
        scores = torch.rand(tokens.shape[:2], device=tokens.device)  # (B, N)
        return Plan.keep(rank_descending(scores) < self.count(grid))


@PRUNERS.register("spatial")
class SpatialLattice(FixedBudget):
    """The same evenly spread lattice of positions for every image."""

    def plan(self, tokens, importance, keys, grid):
        keep = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # (B, N)
        keep[:, lattice(grid, self.count(grid), tokens.device)] = True
        return Plan.keep(keep)


@PRUNERS.register("topk")
class TopImportance(FixedBudget):
    """The most important tokens (CLS attention for CLIP), unmerged: FasterVLM-style."""

    needs = frozenset({"importance"})

    def plan(self, tokens, importance, keys, grid):
        return Plan.keep(rank_descending(importance.detach()) < self.count(grid))


@PRUNERS.register("tome")
class TokenMerging(FixedBudget):
    """ToMe's bipartite soft matching on the keys, repeated until the budget; outputs are group means."""

    needs = frozenset({"keys"})

    def plan(self, tokens, importance, keys, grid):
        return tome_plan(keys, self.count(grid))


@PRUNERS.register("prumerge")
class PruMerge(Pruner):
    """LLaVA-PruMerge: adaptive IQR selection on CLS attention, kNN key merging (`variant`: paper | release)."""

    needs = frozenset({"importance", "keys"})
    plus = False

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.variant = str(cfg.get("variant", "paper"))
        if self.variant not in VARIANTS:
            raise ConfigError(f"pruning.variant={self.variant}; choose one of {', '.join(VARIANTS)}")
        self.k = cfg.get("k")
        if self.k is not None and (not isinstance(self.k, int) or self.k < 1):
            raise ConfigError(
                f"pruning.k={self.k!r} must be a positive number of neighbours (null: scaled to the grid)"
            )
        self.supplement = float(cfg.get("supplement", 3.0))

    def neighbours(self, tokens: int) -> int:
        """PruMerge's k = 32 on 576 tokens, scaled to this grid unless set."""
        return self.k or max(1, round(RELEASE_K * tokens / RELEASE_TOKENS))

    def plan(self, tokens, importance, keys, grid):
        tokens = grid[0] * grid[1]
        cap = None if self.ratio is None else budget(tokens, self.ratio)
        return prumerge_plan(
            importance,
            keys,
            plus=self.plus,
            variant=self.variant,
            k=self.neighbours(tokens),
            cap=cap,
            grid=grid,
            supplement=self.supplement,
        )


@PRUNERS.register("prumerge_plus")
class PruMergePlus(PruMerge):
    """PruMerge+: the IQR outliers plus a spatially uniform lattice (about 25% of tokens), then merged."""

    plus = True


# ---- signals of several experts, arranged as the fusion arranges their tokens ---------------------------


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
