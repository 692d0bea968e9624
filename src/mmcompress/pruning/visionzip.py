"""VisionZip (Yang et al., 2024) as a batched plan: dominant tokens kept, the rest merged into a few."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmcompress.pruning.plan import Plan, rank_descending


def visionzip_plan(importance: torch.Tensor, keys: torch.Tensor, count: int, contextual: int) -> Plan:
    """`count − contextual` dominant tokens (highest importance) kept unchanged, then `contextual` tokens
    summarising the rest: targets spread evenly over the remaining tokens in grid order, every other
    remaining token joined to its most similar target (cosine of keys), each output its group's mean (the
    paper's averaging). Outputs: dominant in grid order, then contextual in grid order of their targets."""
    batch, tokens = importance.shape
    dominant_count = count - contextual
    dominant = rank_descending(importance.detach().float()) < dominant_count  # (B, N)
    positions = torch.arange(tokens, device=importance.device).expand(batch, -1)  # (B, N)
    dominant_slot = dominant.long().cumsum(1) - 1  # (B, N): slot among the dominant, in grid order
    if contextual == 0:
        return Plan.keep(dominant)
    rest = ~dominant
    rest_rank = rest.long().cumsum(1) - 1  # (B, N): index among the remaining tokens, in grid order
    stride = (tokens - dominant_count) // contextual  # ≥ 1: `contextual` ≤ the remaining count
    is_target = rest & (rest_rank % stride == 0) & (rest_rank < stride * contextual)  # (B, N), C per row
    target_pos = torch.where(is_target, positions, tokens).sort(1).values[:, :contextual]  # (B, C)
    unit = F.normalize(keys.detach().float(), dim=-1)  # (B, N, K)
    target_keys = unit.gather(1, target_pos[..., None].expand(-1, -1, unit.shape[-1]))  # (B, C, K)
    joined = (unit @ target_keys.transpose(1, 2)).argmax(-1)  # (B, N): the most similar target
    own = (rest_rank // stride).clamp(max=contextual - 1)  # (B, N): a target's own group
    group = torch.where(is_target, own, joined)  # (B, N)
    dst = torch.where(dominant, dominant_slot, dominant_count + group)  # (B, N) output slot
    size = torch.zeros(batch, count, device=importance.device).scatter_add(
        1, dst, torch.ones_like(dst).float()
    )
    weight = torch.where(dominant, 1.0, 1 / size.gather(1, dst))  # (B, N)
    mask = torch.ones(batch, count, dtype=torch.bool, device=importance.device)
    return Plan(dst, positions, weight, mask)
