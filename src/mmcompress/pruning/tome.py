"""ToMe's bipartite soft matching as a batched plan (token merging by key similarity)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmcompress.pruning.plan import Plan, rank_descending


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
