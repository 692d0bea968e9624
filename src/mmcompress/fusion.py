"""Fusion: several experts' tokens on one grid → one token sequence for the projector."""

from __future__ import annotations

import torch
from torch import nn

from mmcompress.registry import Registry

FUSIONS: Registry[type[nn.Module]] = Registry("fusion")


@FUSIONS.register("concat")
class ChannelConcat(nn.Module):
    """EAGLE's channel concatenation: token i of every expert side by side; the token count stays fixed."""

    def __init__(self, channels: dict[str, int], **_: object) -> None:
        super().__init__()
        self.out_channels = sum(channels.values())

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(tokens.values()), dim=-1)  # (B, N, ΣC)
