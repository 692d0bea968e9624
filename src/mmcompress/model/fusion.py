"""Fusion: every expert's tokens on the common grid → one token sequence for the projector.

Three strategies from EAGLE's comparison: channel concatenation (EAGLE's choice: the token count stays N
however many experts), sequence append (E·N tokens) and Mini-Gemini-style cross-attention (N tokens).
`describe` reports what each one costs: the visual tokens it hands on, the parameters and the FLOPs it adds.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mmcompress.errors import ConfigError
from mmcompress.registry import Registry

FUSIONS: Registry[type[Fusion]] = Registry("fusion")


class Fusion(nn.Module):
    """{expert: (B, N, C_e)} on one grid → (B, M, out_channels)."""

    out_channels: int
    aligned = True  # token i of every expert and of the output is the same grid cell
    full_grid_inputs = False  # its inputs must hold every grid cell of every expert (no pruning before it)

    def __init__(self, channels: dict[str, int], grid: tuple[int, int], cfg: DictConfig) -> None:
        super().__init__()
        self.channels, self.grid = dict(channels), tuple(grid)

    @classmethod
    def check(cls, experts: list[str], cfg: DictConfig) -> None:
        """Reject an impossible configuration before any work starts (a one-line ConfigError)."""

    @property
    def token_grid(self) -> tuple[int, int]:
        """The (rows, cols) layout of the fused tokens, for pruning methods that place tokens spatially."""
        return self.grid

    def describe(self) -> dict:
        """Tokens out, parameters and forward FLOPs per image, measured on one dummy image."""
        tokens = math.prod(self.grid)
        dummy = {name: torch.zeros(1, tokens, c) for name, c in self.channels.items()}
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = self(dummy)
        return {
            "visual_tokens": out.shape[1],
            "out_channels": self.out_channels,
            "params": sum(p.numel() for p in self.parameters()),
            "flops_per_image": counter.get_total_flops(),
        }


@FUSIONS.register("concat")
class ChannelConcat(Fusion):
    """EAGLE's channel concatenation: token i of every expert side by side, one projector after it."""

    def __init__(self, channels: dict[str, int], grid: tuple[int, int], cfg: DictConfig) -> None:
        super().__init__(channels, grid, cfg)
        self.out_channels = sum(channels.values())

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(tokens.values()), dim=-1)  # (B, N, ΣC)


@FUSIONS.register("sequence")
class SequenceAppend(Fusion):
    """Each expert's tokens through its own linear map to a shared width, tagged with a learned per-expert
    embedding, appended one expert after another: E·N tokens, so the LLM pays for every expert."""

    aligned = False

    def __init__(self, channels: dict[str, int], grid: tuple[int, int], cfg: DictConfig) -> None:
        super().__init__(channels, grid, cfg)
        self.out_channels = int(cfg.get("width") or max(channels.values()))
        self.maps = nn.ModuleDict({name: nn.Linear(c, self.out_channels) for name, c in channels.items()})
        self.expert_embedding = nn.Parameter(torch.randn(len(channels), self.out_channels) * 0.02)  # (E, W)

    @property
    def token_grid(self) -> tuple[int, int]:
        return (len(self.channels) * self.grid[0], self.grid[1])  # experts stacked one above another

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        mapped = [self.maps[name](t) + self.expert_embedding[i] for i, (name, t) in enumerate(tokens.items())]
        return torch.cat(mapped, dim=1)  # (B, E·N, W)


@FUSIONS.register("xattn")
class CrossAttention(Fusion):
    """Mini-Gemini-style: the query expert's tokens attend to the other experts' tokens (mapped to its
    width, with 2-D positions on the shared grid so a query can find its own region); N tokens out.
    Its positions assume every grid cell, so only its fused output can be pruned (pruning.where=fused)."""

    full_grid_inputs = True

    def __init__(self, channels: dict[str, int], grid: tuple[int, int], cfg: DictConfig) -> None:
        super().__init__(channels, grid, cfg)
        self.check(list(channels), cfg)
        self.query = cfg.get("query") or next(iter(channels))
        width = self.out_channels = channels[self.query]
        heads = int(cfg.get("heads", 4))
        if width % heads:
            raise ConfigError(f"fusion.heads={heads} must divide the query expert's {width} channels")
        self.keys = [name for name in channels if name != self.query]
        self.maps = nn.ModuleDict({name: nn.Linear(channels[name], width) for name in self.keys})
        self.norm_query, self.norm_context = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.register_buffer("positions", _grid_positions(grid, width), persistent=False)  # (N, W)

    @classmethod
    def check(cls, experts: list[str], cfg: DictConfig) -> None:
        if len(experts) < 2:
            raise ConfigError(
                "fusion=xattn needs at least two experts (e.g. encoder=clip+sam); for one expert use fusion=concat"
            )
        if cfg.get("query") and cfg.query not in experts:
            raise ConfigError(f"fusion.query={cfg.query} is not one of the experts: {', '.join(experts)}")

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        query = tokens[self.query]  # (B, N, W)
        context = torch.cat(
            [self.norm_context(self.maps[n](tokens[n])) for n in self.keys], dim=1
        )  # (B, K·N, W)
        keys = context + self.positions.repeat(len(self.keys), 1)  # (B, K·N, W)
        attended, _ = self.attention(
            self.norm_query(query) + self.positions, keys, context, need_weights=False
        )
        return query + attended  # (B, N, W)


def _grid_positions(grid: tuple[int, int], width: int) -> torch.Tensor:
    """Fixed 2-D sine–cosine positions, (rows·cols, width): half the channels for rows, half for columns."""
    quarter = max(width // 4, 1)
    frequencies = 1.0 / (100.0 ** (torch.arange(quarter) / quarter))  # (W/4,)
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    angles = [axis.flatten().float()[:, None] * frequencies for axis in (rows, cols)]  # 2 × (N, W/4)
    encoding = torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1)  # (N, 4·W/4)
    return nn.functional.pad(encoding, (0, width - encoding.shape[1]))  # (N, W)
