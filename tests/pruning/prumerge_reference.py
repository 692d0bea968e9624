"""PruMerge written the straightforward way — one image, one kept token at a time, plain Python sets —
as the oracle for the batched implementation and the baseline of benchmarks/pruning.py."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def prumerge_loop(
    features: torch.Tensor,
    keys: torch.Tensor,
    attention: torch.Tensor,
    *,
    plus: bool = False,
    variant: str = "paper",
    k: int = 32,
    grid: tuple[int, int] | None = None,
    supplement: float = 3.0,
) -> list[torch.Tensor]:
    """(B, N, C), (B, N, K), (B, N) → one (M_b, C) tensor per image."""
    batch, tokens, _ = features.shape
    cols = grid[1] if grid else math.isqrt(tokens)
    if variant == "release":  # one IQR over the whole batch, one count for every image
        pooled = attention.double().flatten().numpy()
        q1, q3 = np.percentile(pooled, [25, 75])
        ratio = int((pooled > q3 + 1.5 * (q3 - q1)).sum()) / (batch * tokens)
    outputs = []
    for b in range(batch):
        a = attention[b].double()
        x = features[b]
        unit = F.normalize(keys[b].float(), dim=-1)
        if variant == "paper":
            q1, q3 = np.percentile(a.numpy(), [25, 75])
            kept = [i for i in range(tokens) if a[i] > q3 + 1.5 * (q3 - q1)] or [int(a.argmax())]
            if plus:
                stride = max(1, math.ceil(math.sqrt(tokens / (supplement * len(kept)))))
                lattice = [
                    i
                    for i in range(tokens)
                    if (i // cols - stride // 2) % stride == 0 and (i % cols - stride // 2) % stride == 0
                ]
                kept = sorted(set(kept) | set(lattice))
        else:
            count = max(1, int(tokens * ratio))
            kept = a.topk(count).indices.tolist()
            if plus:
                step = max(1, int(int(1 / max(ratio, 1 / tokens)) / 3))
                kept += [i for i in range(0, tokens - 1, step) if i not in kept]
        merged = []
        for i in kept:
            others = [j for j in range(tokens) if j != i]
            similarity = torch.stack([unit[i] @ unit[j] for j in others])
            neighbours = [others[t] for t in similarity.topk(min(k, tokens - 1)).indices.tolist()]
            if variant == "paper":
                members = [i, *neighbours]
                weights = [float(a[j]) for j in members]
                merged.append(sum(w * x[j] for w, j in zip(weights, members, strict=True)) / sum(weights))
            else:
                merged.append(x[i] + sum(float(a[j]) * x[j] for j in neighbours))
        if variant == "release":
            merged.append(sum(float(a[j]) * x[j] for j in range(tokens) if j not in kept))
        outputs.append(torch.stack(merged))
    return outputs
