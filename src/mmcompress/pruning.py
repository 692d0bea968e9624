"""Visual-token pruning: which of the N visual tokens reach the LLM, as (tokens, keep-mask)."""

from __future__ import annotations

import torch
from torch import nn

from mmcompress.registry import Registry

PRUNERS: Registry[type[nn.Module]] = Registry("pruning method")


@PRUNERS.register("none")
class KeepAll(nn.Module):
    """Every token is kept; the mask exists so variable-count methods share one interface."""

    def __init__(self, **_: object) -> None:
        super().__init__()

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # (B, N)
        return tokens, mask
