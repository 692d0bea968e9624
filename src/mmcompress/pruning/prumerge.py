"""LLaVA-PruMerge and PruMerge+ as batched plans: IQR outliers of the [CLS] attention are kept (plus a
spatially uniform lattice for PruMerge+), and each kept token absorbs its key-nearest neighbours.

Two variants: the paper's (per-image IQR, attention-weighted averages, grid order) and the release's (IQR
pooled over the batch, unnormalised neighbour weights, descending attention, and one extra token pooling
every pruned token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmcompress.pruning.plan import Plan, kept_slots, rank_descending, stride_within, strided_lattice

RELEASE_K, RELEASE_TOKENS = 32, 576  # PruMerge's neighbour count on CLIP-L/336's 24×24 grid


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
    release: bool = False,
    k: int = RELEASE_K,
    cap: int | None = None,
    grid: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PruMerge (and PruMerge+) on (B, N, C) features, (B, N, K) keys and (B, N) CLS attention.

    Returns (tokens (B, M, C), mask (B, M) bool). The paper's variant: per-image IQR outliers, each kept
    token becomes the attention-weighted average of itself and its k key-nearest tokens, grid order.
    `release`: the released algorithm — IQR pooled over the batch, kept tokens in descending attention,
    neighbours added with unnormalised weights, and one extra token pooling every pruned token.
    """
    side = math.isqrt(features.shape[1])
    plan = prumerge_plan(
        cls_attention, keys, plus=plus, release=release, k=k, cap=cap, grid=grid or (side, side)
    )
    return plan.apply(features), plan.mask


def prumerge_plan(
    attention: torch.Tensor,
    keys: torch.Tensor,
    *,
    plus: bool,
    release: bool,
    k: int,
    cap: int | None,
    grid: tuple[int, int],
    supplement: float = 3.0,
) -> Plan:
    """The PruMerge plan: which tokens survive (IQR, plus a lattice for PruMerge+) and their merges."""
    attention = attention.detach().float()  # (B, N)
    batch, tokens = attention.shape
    rank = rank_descending(attention)  # (B, N)
    if not release:
        count = iqr_outliers(attention).clamp(min=1)  # (B,)
        if cap is not None:
            count = count.clamp(max=cap)
        keep = rank < count[:, None]  # (B, N): the outliers are the top-`count` tokens
        if plus:  # a lattice of at most about `supplement` points per outlier, within the cap
            stride = (tokens / (supplement * count)).sqrt().ceil().clamp(min=1).long()  # (B,)
            lattice = strided_lattice(grid, stride)  # (B, N)
            if cap is not None:  # outliers and lattice together keep at most `cap` tokens
                room = cap - count  # (B,)
                lattice = strided_lattice(grid, torch.maximum(stride, stride_within(grid, room)))
                lattice &= (room > 0)[:, None]
            keep |= lattice
        priority = None  # grid order
    else:
        ratio = int(iqr_outliers(attention, pooled=True)) / (batch * tokens)
        count = max(1, int(tokens * ratio))
        if cap is not None:
            count = min(count, cap)
        keep = rank < count
        priority = rank.float()  # descending attention, as topk returns them
        if plus and (cap is None or count < cap):
            step = max(1, int(int(1 / max(ratio, 1 / tokens)) / 3))
            if cap is not None:  # the lattice's ceil((N − 1) / step) points fit beside the outliers
                step = max(step, -(-(tokens - 1) // (cap - count)))
            positions = torch.arange(tokens, device=keep.device)
            grid_points = (positions % step == 0) & (positions < tokens - 1)  # arange(0, N−1, step)
            supplement_mask = grid_points[None] & ~keep
            keep = keep | supplement_mask
            priority = torch.where(supplement_mask, count + positions[None].float(), priority)
    return merge_plan(attention, keys, keep, priority, k=min(k, tokens - 1), release=release)


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
