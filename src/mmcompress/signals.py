"""Pruning signals: how important each grid token is, and a key to measure which tokens are alike.

CLIP has a [CLS] token, so its importance is PruMerge's CLS attention: the last layer's query of [CLS]
against the keys of its input (the penultimate features), head-averaged by default or, as the release
does, one softmax over all heads' channels. Its keys are that layer's keys. Experts without a [CLS]
token rank theirs by what measured best for each (experiments/pruning-signals): SAM and Pix2Struct by
`distinct` — how unlike the image's mean token a token is — and ConvNeXt by the feature `norm`; their keys
are their features. Signals are computed on the native grid and average-pooled onto the common grid, so pruning
never ranks tokens that upsampling invented (that case is refused).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from mmcompress.encoders import VisionExpert
from mmcompress.errors import ConfigError

IMPORTANCE = ("auto", "cls", "distinct", "norm")  # pruning.importance
ATTENTION_FORMS = ("heads_mean", "single_softmax")  # pruning.attention
NO_CLS_DEFAULT = {"convnext": "norm", "sam": "distinct", "pix2struct": "distinct"}  # measured, per family


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
        """The importance this expert uses: CLS attention where it has a [CLS] token, unless told otherwise."""
        has_cls = expert.family == "clip"
        if self.importance == "auto":
            return "cls" if has_cls else NO_CLS_DEFAULT.get(expert.family, "distinct")
        if self.importance == "cls" and not has_cls:
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


def encode(expert: VisionExpert, inputs: torch.Tensor, spec: SignalSpec | None) -> ExpertTokens:
    """The expert's grid tokens, with importance and keys when `spec` asks for signals (one forward pass)."""
    if spec is None:
        return ExpertTokens(expert(inputs))
    kind = spec.kind_for(expert)
    if kind != "cls":
        tokens = expert(inputs)  # (B, N, C)
        return ExpertTokens(tokens, token_importance(tokens, kind), tokens)
    with _last_attention_input(expert) as captured:
        tokens = expert(inputs)  # (B, N, C)
    importance, keys = cls_attention(
        expert.model.encoder.layers[-1].self_attn, captured[0], spec.attention
    )  # (B, n), (B, n, C) on the native grid
    native = expert.native_grid
    return ExpertTokens(
        tokens, _pool(importance[..., None], native, expert.grid)[..., 0], _pool(keys, native, expert.grid)
    )


def token_importance(tokens: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, N, C) → (B, N) importance of experts without [CLS]: `distinct` or the feature `norm`."""
    if kind == "norm":
        return tokens.float().norm(dim=-1)
    mean = tokens.float().mean(1, keepdim=True)  # (B, 1, C)
    return 1 - F.cosine_similarity(tokens.float(), mean, dim=-1)  # (B, N) in [0, 2]


@contextmanager
def _last_attention_input(expert: VisionExpert):
    """Capture the (already layer-normed) input of the last layer's attention during a normal forward."""
    captured: list[torch.Tensor] = []

    def keep(_module, args, kwargs):
        captured.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    handle = expert.model.encoder.layers[-1].self_attn.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def cls_attention(
    attention, hidden: torch.Tensor, form: str = "heads_mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS]→patch attention of a CLIP attention layer over its input `hidden` (B, 1+n, C), and the
    layer's patch keys: ((B, n), (B, n, C)).

    `heads_mean`: each head's softmax(q·k/√d), averaged. `single_softmax` (the release): one softmax of
    q·k over all heads' channels scaled by 1/√C, i.e. of √heads × the head-averaged logits (4× for ViT-L)."""
    query = attention.q_proj(hidden[:, :1]).float()  # (B, 1, C)
    keys = attention.k_proj(hidden).float()  # (B, 1+n, C)
    if form == "single_softmax":
        logits = (query @ keys.transpose(1, 2))[:, 0] / hidden.shape[-1] ** 0.5  # (B, 1+n)
        return logits.softmax(-1)[:, 1:], keys[:, 1:]
    heads, head_dim = attention.num_heads, attention.head_dim
    logits = (
        torch.einsum(
            "bhd,bkhd->bhk",
            query[:, 0].unflatten(-1, (heads, head_dim)),
            keys.unflatten(-1, (heads, head_dim)),
        )
        / head_dim**0.5
    )  # (B, heads, 1+n)
    return logits.softmax(-1).mean(1)[:, 1:], keys[:, 1:]


def _pool(values: torch.Tensor, native: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """(B, h·w, K) on the native grid → (B, H·W, K) on the common grid by area averaging."""
    if tuple(native) == tuple(grid):
        return values
    maps = values.transpose(1, 2).unflatten(2, native)  # (B, K, h, w)
    return F.adaptive_avg_pool2d(maps, grid).flatten(2).transpose(1, 2)  # (B, H·W, K)
