"""VisionZip and DivPrune written the straightforward way — one image at a time, plain Python lists — as the
oracles for the batched plans."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def visionzip_loop(features, importance, keys, count: int, contextual: int) -> list[torch.Tensor]:
    """(B, N, C), (B, N), (B, N, K) → one (count, C) tensor per image."""
    out = []
    for b in range(features.shape[0]):
        order = sorted(range(features.shape[1]), key=lambda i: (-float(importance[b, i]), i))
        dominant = sorted(order[: count - contextual])
        rest = [i for i in range(features.shape[1]) if i not in dominant]
        rows = [features[b, i] for i in dominant]
        if contextual:
            stride = len(rest) // contextual
            targets = [rest[j * stride] for j in range(contextual)]
            groups = {t: [t] for t in targets}
            unit = F.normalize(keys[b].float(), dim=-1)
            for i in rest:
                if i not in groups:
                    similarity = [float(unit[i] @ unit[t]) for t in targets]
                    groups[targets[similarity.index(max(similarity))]].append(i)
            rows += [features[b, groups[t]].mean(0) for t in targets]
        out.append(torch.stack(rows))
    return out


def divprune_loop(features, count: int) -> list[list[int]]:
    """(B, N, C) → the kept positions of each image, in grid order."""
    out = []
    for b in range(features.shape[0]):
        unit = F.normalize(features[b].float(), dim=-1)
        n = len(unit)
        distance = [[1 - float(unit[i] @ unit[j]) for j in range(n)] for i in range(n)]
        isolation = [min(distance[i][j] for j in range(n) if j != i) for i in range(n)]
        chosen = [isolation.index(max(isolation))]
        while len(chosen) < count:
            spread = [-float("inf") if i in chosen else min(distance[c][i] for c in chosen) for i in range(n)]
            chosen.append(spread.index(max(spread)))
        out.append(sorted(chosen))
    return out
