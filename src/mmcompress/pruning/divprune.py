"""DivPrune (Alvar et al., 2025) as a batched plan: the most diverse subset of the tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmcompress.pruning.plan import Plan


def divprune_plan(tokens: torch.Tensor, count: int) -> Plan:
    """DivPrune's greedy max–min diversity selection on the tokens' cosine distances: first the token
    farthest from its nearest neighbour, then repeatedly the token farthest from everything chosen.
    Greedy selection is sequential, so one step per kept token runs, each over the whole batch at once."""
    unit = F.normalize(tokens.detach().float(), dim=-1)  # (B, N, C)
    batch, length, _ = unit.shape
    distance = 1 - unit @ unit.transpose(1, 2)  # (B, N, N) cosine distance
    distance.diagonal(dim1=1, dim2=2).fill_(torch.inf)  # a token is not its own neighbour
    chosen = torch.zeros(batch, length, dtype=torch.bool, device=unit.device)  # (B, N)
    rows = torch.arange(batch, device=unit.device)
    pick = distance.min(2).values.argmax(1)  # (B,) the most isolated token
    nearest = torch.full((batch, length), torch.inf, device=unit.device)  # (B, N) distance to the chosen set
    for _ in range(count):
        chosen[rows, pick] = True
        nearest = torch.minimum(nearest, distance[rows, pick])  # (B, N)
        pick = nearest.masked_fill(chosen, -torch.inf).argmax(1)  # (B,)
    return Plan.keep(chosen)
