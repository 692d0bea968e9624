"""The A and C scores of a representation.

A (cross-modal alignment): a candidate's visual tokens after its align-stage projector, each matched to its
most similar token of a reference representation's (cosine), averaged over tokens and images.
C (correspondence): zero-shot keypoint transfer between image pairs on the candidate's grid features, PCK.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mmcompress.data.llava import open_image

A_DEFINITION = (
    "mean over images and over the candidate's visual tokens (after its align-stage projector, in LLM "
    "embedding space) of the max cosine similarity to any token of the reference, averaged over references"
)
C_DEFINITION = (
    "PCK: fraction of keypoints whose zero-shot transfer (nearest neighbour on the candidate's grid "
    "features, window soft-argmax) lands within alpha x the target's reference length, per pair, then mean"
)


def a_score(
    candidate: torch.Tensor,
    reference: torch.Tensor,
    candidate_mask: torch.Tensor | None = None,
    reference_mask: torch.Tensor | None = None,
) -> float:
    """(n, T, D) candidate tokens against (n, T', D) reference tokens of the same n images; masks (n, T)
    mark the tokens fed (pruned runs pad)."""
    candidate = F.normalize(candidate.float(), dim=-1, eps=1e-10)
    reference = F.normalize(reference.float(), dim=-1, eps=1e-10)
    similarity = torch.bmm(candidate, reference.transpose(1, 2))  # (n, T, T')
    if reference_mask is not None:
        similarity = similarity.masked_fill(~reference_mask[:, None, :], -math.inf)
    best = similarity.amax(-1)  # (n, T): each token's best reference match
    if candidate_mask is None:
        return best.mean().item()
    per_image = (best * candidate_mask).sum(1) / candidate_mask.sum(1)
    return per_image.mean().item()


def transfer_keypoints(
    source: torch.Tensor,
    target: torch.Tensor,
    points: torch.Tensor,
    size: float,
    window: int = 3,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Where each source keypoint lands in the target, by feature matching.

    source, target: (B, H, W, C) grid features of images `size` pixels a side; points: (B, K, 2) source
    keypoints (x, y in pixels). The source feature is sampled bilinearly at each keypoint; its most similar
    target cell (cosine) is refined by a softmax(similarity / temperature)-weighted mean of the cell centres
    in a `window` x `window` neighbourhood (window 1: plain nearest neighbour). Returns (B, K, 2) pixels."""
    b, h, w, c = target.shape
    grid = (points / size * 2 - 1).unsqueeze(2)  # (B, K, 1, 2) in [-1, 1], x first
    sampled = F.grid_sample(source.permute(0, 3, 1, 2), grid, align_corners=False)  # (B, C, K, 1)
    queries = F.normalize(sampled.squeeze(-1).transpose(1, 2), dim=-1)  # (B, K, C)
    cells = F.normalize(target.reshape(b, h * w, c), dim=-1)  # (B, HW, C)
    similarity = torch.bmm(queries, cells.transpose(1, 2)).view(b, -1, h, w)  # (B, K, H, W)
    best = similarity.flatten(2).argmax(-1)  # (B, K)
    row, col = best // w, best % w
    offsets = torch.arange(window, device=target.device) - window // 2
    rows = row[..., None, None] + offsets[:, None]  # (B, K, window, 1)
    cols = col[..., None, None] + offsets[None, :]  # (B, K, 1, window)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (B, K, window, window)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).flatten(2)  # (B, K, window²)
    scores = similarity.flatten(2).gather(2, flat).masked_fill(~inside.flatten(2), -math.inf)
    weights = torch.softmax(scores / temperature, -1)  # (B, K, window²)
    centres_x = (flat % w + 0.5) * size / w
    centres_y = (flat // w + 0.5) * size / h
    return torch.stack([(weights * centres_x).sum(-1), (weights * centres_y).sum(-1)], -1)  # (B, K, 2)


def pck(
    predicted: torch.Tensor,
    truth: torch.Tensor,
    extent: torch.Tensor,
    alpha: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per pair, the fraction of (valid) keypoints within alpha x extent of the truth. (B, K, 2) → (B,)."""
    valid = torch.ones(predicted.shape[:2], dtype=torch.bool) if valid is None else valid
    hit = ((predicted - truth).norm(dim=-1) <= alpha * extent[:, None]) & valid
    return hit.sum(1) / valid.sum(1).clamp(min=1)


@torch.no_grad()
def projected_tokens(
    model, images: Sequence[Path], batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, M, D) visual tokens as the LLM receives them, and their (n, M) mask, for `images`."""
    device = next(model.parameters()).device
    tokens, masks = [], []
    for lo in range(0, len(images), batch_size):
        pil = [open_image(p) for p in images[lo : lo + batch_size]]
        pixels = {name: e.preprocess(pil).to(device) for name, e in model.experts.items()}
        visual, mask = model.visual_tokens(model.encode_images(pixels))  # (B, M, D), (B, M)
        tokens.append(visual.float().cpu())
        masks.append(mask.cpu())
    return torch.cat(tokens), torch.cat(masks)


@torch.no_grad()
def grid_features(model, images: list) -> torch.Tensor:
    """(B, H, W, ΣC) features on the common grid: each expert's L2-normalised, then concatenated (as the
    law-of-vision code concatenates mixtures)."""
    device = next(model.parameters()).device
    pixels = {name: e.preprocess(images).to(device) for name, e in model.experts.items()}
    encoded = model.encode_images(pixels)
    fused = torch.cat([F.normalize(e.tokens.float(), dim=-1) for e in encoded.values()], -1)  # (B, N, ΣC)
    h, w = model.fusion.grid
    return fused.view(fused.shape[0], h, w, -1).cpu()


def c_scores(model, pairs: list, window: int = 3, batch_size: int = 32) -> dict:
    """PCK@0.10 and @0.05 of zero-shot keypoint transfer over `pairs`, overall and per transform."""
    per_pair = {0.10: [], 0.05: []}
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo : lo + batch_size]
        k = max(len(p.source_points) for p in chunk)
        points = torch.zeros(len(chunk), k, 2)
        truth = torch.zeros(len(chunk), k, 2)
        valid = torch.zeros(len(chunk), k, dtype=torch.bool)
        for i, p in enumerate(chunk):  # pairs carry different keypoint counts: pad and mask
            points[i, : len(p.source_points)] = torch.as_tensor(p.source_points)
            truth[i, : len(p.target_points)] = torch.as_tensor(p.target_points)
            valid[i, : len(p.source_points)] = True
        size = float(chunk[0].source.width)
        predicted = transfer_keypoints(
            grid_features(model, [p.source for p in chunk]),
            grid_features(model, [p.target for p in chunk]),
            points,
            size,
            window,
        )
        extent = torch.tensor([p.extent for p in chunk])
        for alpha in per_pair:
            per_pair[alpha].append(pck(predicted, truth, extent, alpha, valid))
    pcks = {alpha: torch.cat(v) for alpha, v in per_pair.items()}
    kinds = [p.kind for p in pairs]
    return {
        "pck@0.10": pcks[0.10].mean().item(),
        "pck@0.05": pcks[0.05].mean().item(),
        "pck@0.10_by_kind": {
            kind: pcks[0.10][[k == kind for k in kinds]].mean().item() for kind in sorted(set(kinds))
        },
    }
