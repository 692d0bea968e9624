"""Fusion strategies: tokens out, channels, the cost each reports, and their one-line errors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from mmcompress.errors import ConfigError
from mmcompress.model.fusion import FUSIONS

CHANNELS = {"clip": 16, "sam": 8, "pix2struct": 12}
GRID = (4, 4)


def _fusion(name: str, **options):
    torch.manual_seed(0)
    return FUSIONS[name](CHANNELS, GRID, OmegaConf.create(options))


def _tokens(batch: int = 2) -> dict[str, torch.Tensor]:
    return {name: torch.randn(batch, 16, c) for name, c in CHANNELS.items()}


@pytest.mark.parametrize(
    ("name", "options", "tokens", "channels"),
    [
        ("concat", {}, 16, 16 + 8 + 12),  # token i of every expert side by side
        ("sequence", {}, 3 * 16, 16),  # appended, mapped to the widest expert's width
        ("sequence", {"width": 10}, 3 * 16, 10),
        ("xattn", {"heads": 4}, 16, 16),  # the query expert's tokens, its width
    ],
)
def test_tokens_and_channels_out(name, options, tokens, channels):
    fusion = _fusion(name, **options)
    out = fusion(_tokens())
    assert out.shape == (2, tokens, channels) == (2, tokens, fusion.out_channels)
    described = fusion.describe()
    assert described["visual_tokens"] == tokens and described["out_channels"] == channels
    assert described["params"] == sum(p.numel() for p in fusion.parameters())
    assert (described["flops_per_image"] > 0) == (name != "concat")  # concatenation costs no FLOPs


def test_sequence_tags_each_expert_so_identical_tokens_differ():
    fusion = _fusion("sequence", width=8)
    for layer in fusion.maps.values():
        torch.nn.init.zeros_(layer.weight), torch.nn.init.zeros_(layer.bias)
    out = fusion(_tokens(1))  # (1, 48, 8): only the expert embeddings remain
    torch.testing.assert_close(out[0, :16], fusion.expert_embedding[0].expand(16, -1))
    assert not torch.allclose(out[0, 0], out[0, 16])


def test_xattn_queries_find_their_own_grid_cell():
    """With identity maps, the 2-D positions make each query attend most to the key at its own cell."""
    fusion = _fusion("xattn", heads=1, query="clip")
    attention = fusion.attention
    width = fusion.out_channels
    with torch.no_grad():
        attention.in_proj_weight.copy_(torch.eye(width).repeat(3, 1) * 4)
        attention.in_proj_bias.zero_()
    queries = torch.zeros(1, 16, width)
    context = fusion.positions[None]  # (1, 16, W) keys are positions only
    _, weights = attention(queries + fusion.positions, context, context)
    assert (weights[0].argmax(-1) == torch.arange(16)).all()


def test_xattn_changes_only_through_the_other_experts():
    fusion = _fusion("xattn", query="sam")
    tokens = _tokens()
    out = fusion(tokens)
    assert out.shape == (2, 16, CHANNELS["sam"])
    moved = dict(tokens, clip=tokens["clip"] + 1)
    assert not torch.allclose(fusion(moved), out)  # the context matters


@pytest.mark.parametrize(
    ("name", "options", "channels", "message"),
    [
        ("xattn", {}, {"clip": 16}, "at least two experts"),
        ("xattn", {"query": "convnext"}, CHANNELS, "not one of the experts"),
        ("xattn", {"heads": 3}, CHANNELS, "must divide"),
    ],
)
def test_impossible_fusions_are_one_line_errors(name, options, channels, message):
    with pytest.raises(ConfigError, match=message):
        FUSIONS[name](channels, GRID, OmegaConf.create(options))
