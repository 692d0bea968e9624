"""Pruning signals: how important each grid token is, and a key to measure which tokens are alike.

What an expert offers is its family's contract (expert.py): an expert with a summary query ranks its
patches by PruMerge's CLS attention — the last layer's query of [CLS] against the keys of its input
(SigLIP, which has no [CLS]: its pooling head's probe against the final tokens), head-averaged by default
or, as the release does, one softmax over all heads' channels — and its keys are that layer's keys. An expert without one ranks its tokens by the importance its family declares, measured best for it
(experiments/pruning-signals): `distinct` (how unlike the image's mean token a token is) or the feature
`norm`; its keys are its features. Signals are computed on the native grid and average-pooled onto the
common grid, so pruning never ranks tokens that upsampling invented (that case is refused).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from mmcompress.errors import ConfigError
from mmcompress.vision.expert import ATTENTION_FORMS, VisionExpert
from mmcompress.vision.grid import PatchMap

IMPORTANCE = ("auto", "cls", "distinct", "norm")  # pruning.importance


@dataclass
class ExpertTokens:
    """One expert's tokens on the common grid and, when pruning needs them, its signals."""

    tokens: torch.Tensor  # (B, N, C)
    importance: torch.Tensor | None = None  # (B, N), non-negative
    keys: torch.Tensor | None = None  # (B, N, K)

    def __getitem__(self, rows) -> ExpertTokens:
        """The same images' rows of every tensor (a batch out of a cached split)."""
        return ExpertTokens(*(None if t is None else t[rows] for t in self.tensors()))

    def to(self, device) -> ExpertTokens:
        return ExpertTokens(*(None if t is None else t.to(device) for t in self.tensors()))

    @classmethod
    def cat(cls, parts: list[ExpertTokens]) -> ExpertTokens:
        """Chunks of images joined along the batch."""
        columns = zip(*(p.tensors() for p in parts), strict=True)
        return cls(*(None if c[0] is None else torch.cat(c) for c in columns))

    def tensors(self) -> list[torch.Tensor | None]:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True)
class SignalSpec:
    """Which signals to compute: the importance kind asked for and the form of CLS attention."""

    importance: str = "auto"
    attention: str = "heads_mean"

    @classmethod
    def from_config(cls, pruning: DictConfig) -> SignalSpec:
        spec = cls(str(pruning.get("importance", "auto")), str(pruning.get("attention", "heads_mean")))
        if spec.importance not in IMPORTANCE:
            raise ConfigError(f"pruning.importance={spec.importance}; choose one of {', '.join(IMPORTANCE)}")
        if spec.attention not in ATTENTION_FORMS:
            raise ConfigError(
                f"pruning.attention={spec.attention}; choose one of {', '.join(ATTENTION_FORMS)}"
            )
        return spec

    def kind_for(self, expert: VisionExpert) -> str:
        """The importance this expert uses: its summary query's attention ([CLS]) where it has one, else what
        its family declares, unless told otherwise. A family that declares neither is a config error."""
        if self.importance == "auto":
            if expert.summary_query:
                return "cls"
            if expert.importance_without_cls is None:
                raise ConfigError(
                    f"expert '{expert.name}' ({expert.family}) has no [CLS] token or summary query and its family declares no "
                    "importance signal; set pruning.importance=distinct or pruning.importance=norm"
                )
            return expert.importance_without_cls
        if self.importance == "cls" and not expert.summary_query:
            raise ConfigError(
                f"pruning.importance=cls, but expert '{expert.name}' ({expert.family}) has no [CLS] token; "
                "use importance=auto (cls where possible, else the measured best) or distinct / norm"
            )
        return self.importance


def check_native(expert: VisionExpert) -> None:
    """Pruning ranks real tokens: an expert upsampled onto the common grid would offer invented ones."""
    (h, w), (rows, cols) = expert.native_grid, expert.grid
    if h < rows or w < cols:
        raise ConfigError(
            f"pruning acts on native tokens, but expert '{expert.name}' is upsampled from {h}×{w} onto the "
            f"{rows}×{cols} grid; set grid=[{h},{w}] (or smaller), or pruning=none"
        )


def grid_signals(
    native: PatchMap, tokens: torch.Tensor, kind: str, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) importance and (B, N, K) keys of an expert's (B, N, C) grid `tokens`: its [CLS] attention and
    keys pooled from the native map onto the grid, or an importance of the tokens themselves."""
    if kind != "cls":
        return token_importance(tokens, kind), tokens
    size = tuple(native.features.shape[-2:])
    importance = pool_to_grid(native.cls_attention[..., None], size, grid)[..., 0]
    return importance, pool_to_grid(native.keys, size, grid)


def token_importance(tokens: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, N, C) → (B, N) importance of experts without [CLS]: `distinct` or the feature `norm`."""
    if kind == "norm":
        return tokens.float().norm(dim=-1)
    mean = tokens.float().mean(1, keepdim=True)  # (B, 1, C)
    return 1 - F.cosine_similarity(tokens.float(), mean, dim=-1)  # (B, N) in [0, 2]


def cls_attention(
    query: torch.Tensor, keys: torch.Tensor, heads: int, form: str, patches_from: int = 1
) -> torch.Tensor:
    """Summary-query→patch attention from the (B, 1, C) query ([CLS]'s, or a pooling probe's) and the
    (B, K, C) keys of an attention layer with `heads` heads: (B, K − patches_from), the softmax taken over
    every key and the first `patches_from` (the [CLS] token itself) dropped after it.

    `heads_mean`: each head's softmax(q·k/√d), averaged. `single_softmax` (the release): one softmax of
    q·k over all heads' channels scaled by 1/√C, i.e. of √heads × the head-averaged logits (4× for ViT-L)."""
    width = keys.shape[-1]
    if form == "single_softmax":
        logits = (query @ keys.transpose(1, 2))[:, 0] / width**0.5  # (B, K)
        return logits.softmax(-1)[:, patches_from:]
    head_dim = width // heads
    logits = (
        torch.einsum(
            "bhd,bkhd->bhk",
            query[:, 0].unflatten(-1, (heads, head_dim)),
            keys.unflatten(-1, (heads, head_dim)),
        )
        / head_dim**0.5
    )  # (B, heads, K)
    return logits.softmax(-1).mean(1)[:, patches_from:]


def pool_to_grid(values: torch.Tensor, native: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """(B, h·w, K) on the native grid → (B, H·W, K) on the common grid by area averaging."""
    if tuple(native) == tuple(grid):
        return values
    maps = values.transpose(1, 2).unflatten(2, native)  # (B, K, h, w)
    return F.adaptive_avg_pool2d(maps, grid).flatten(2).transpose(1, 2)  # (B, H·W, K)
