"""The pruning methods behind `pruning=`, registered under their conf/pruning option names.

none, random, spatial (a uniform lattice), topk (by importance), prumerge (IQR outliers of the importance,
each merged with its key-nearest neighbours), prumerge_plus (plus a spatially uniform supplement), tome
(bipartite soft matching, repeated until the budget), visionzip (dominant tokens plus contextual merges)
and divprune (max–min diversity). Fixed-budget methods keep `ratio` of the tokens;
PruMerge's count is adaptive, with `ratio` as an optional cap. Each method states the signals it reads
(`needs`), so experts compute only those; `check` rejects bad settings before any work starts.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from mmcompress.errors import ConfigError
from mmcompress.pruning.divprune import divprune_plan
from mmcompress.pruning.plan import Plan, budget, lattice, rank_descending
from mmcompress.pruning.prumerge import RELEASE_K, RELEASE_TOKENS, prumerge_plan
from mmcompress.pruning.tome import tome_plan
from mmcompress.pruning.visionzip import visionzip_plan
from mmcompress.registry import Registry

PRUNERS: Registry[type[Pruner]] = Registry("pruning method")
WHERE = ("fused", "experts")  # pruning.where
VARIANTS = ("paper", "release")  # pruning.variant


class Pruner(nn.Module):
    """A method with its settings; `needs` names the signals it reads (so experts compute only those)."""

    needs: frozenset[str] = frozenset()

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        """Reject impossible settings with a one-line ConfigError (also called by the constructor)."""
        where = cls.where_of(cfg)
        if where not in WHERE:
            raise ConfigError(f"pruning.where={where}; choose one of {', '.join(WHERE)}")
        ratio = cfg.get("ratio")
        if ratio is not None and (
            isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1
        ):
            raise ConfigError(f"pruning.ratio={ratio!r} must be a fraction of tokens kept in (0, 1]")

    @staticmethod
    def where_of(cfg: DictConfig) -> str:
        """Where pruning acts: on the `fused` tokens, or on each expert's before fusion (`experts`)."""
        return str(cfg.get("where", "fused"))

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.check(cfg)
        self.where = self.where_of(cfg)
        ratio = cfg.get("ratio")
        self.ratio = None if ratio is None else float(ratio)

    def plan(self, tokens, importance, keys, grid: tuple[int, int]) -> Plan:
        """The plan for (B, N, C) `tokens` on a (H, W) grid, from their (B, N) importance and (B, N, K) keys."""
        raise NotImplementedError

    def forward(self, tokens, importance, keys, grid) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, C) tokens on a (H, W) grid → (B, M, C) kept tokens and their (B, M) mask."""
        plan = self.plan(tokens, importance, keys, grid)
        return plan.apply(tokens), plan.mask


@PRUNERS.register("none")
class KeepAll(Pruner):
    """Every token is kept; the mask exists so variable-count methods share one interface."""

    def __init__(self, cfg: DictConfig | None = None) -> None:
        super().__init__(cfg or DictConfig({}))

    def plan(self, tokens, importance, keys, grid):
        return Plan.keep(torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def forward(self, tokens, importance=None, keys=None, grid=None):
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # (B, N)


class FixedBudget(Pruner):
    """Keeps round(ratio · N) tokens of every image."""

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        if cfg.get("ratio") is None:
            raise ConfigError(
                f"pruning={cfg.name} keeps a fixed fraction: set pruning.ratio, e.g. pruning.ratio=0.25"
            )

    def count(self, grid: tuple[int, int]) -> int:
        return budget(grid[0] * grid[1], self.ratio)


@PRUNERS.register("random")
class RandomTokens(FixedBudget):
    """A uniformly random subset per image (a surprisingly strong baseline)."""

    def plan(self, tokens, importance, keys, grid):
        scores = torch.rand(tokens.shape[:2], device=tokens.device)  # (B, N)
        return Plan.keep(rank_descending(scores) < self.count(grid))


@PRUNERS.register("spatial")
class SpatialLattice(FixedBudget):
    """The same evenly spread lattice of positions for every image."""

    def plan(self, tokens, importance, keys, grid):
        keep = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # (B, N)
        keep[:, lattice(grid, self.count(grid), tokens.device)] = True
        return Plan.keep(keep)


@PRUNERS.register("topk")
class TopImportance(FixedBudget):
    """The most important tokens (CLS attention for CLIP), unmerged: FasterVLM-style."""

    needs = frozenset({"importance"})

    def plan(self, tokens, importance, keys, grid):
        return Plan.keep(rank_descending(importance.detach()) < self.count(grid))


@PRUNERS.register("tome")
class TokenMerging(FixedBudget):
    """ToMe's bipartite soft matching on the keys, repeated until the budget; outputs are group means."""

    needs = frozenset({"keys"})

    def plan(self, tokens, importance, keys, grid):
        return tome_plan(keys, self.count(grid))


@PRUNERS.register("visionzip")
class VisionZip(FixedBudget):
    """VisionZip: the most important tokens, plus a `contextual` share of the budget merging the rest by key
    similarity (the paper's 54 + 10 of 64 tokens on LLaVA-1.5)."""

    needs = frozenset({"importance", "keys"})

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        share = cfg.get("contextual", 0.16)
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise ConfigError(
                f"pruning.contextual={share!r} must be the budget's share in [0, 1) of merged tokens"
            )

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.contextual = float(cfg.get("contextual", 0.16))

    def plan(self, tokens, importance, keys, grid):
        count = self.count(grid)
        return visionzip_plan(importance, keys, count, min(count - 1, round(self.contextual * count)))


@PRUNERS.register("divprune")
class DivPrune(FixedBudget):
    """DivPrune: the most mutually distant tokens (greedy max–min cosine distance of their features)."""

    def plan(self, tokens, importance, keys, grid):
        return divprune_plan(tokens, self.count(grid))


@PRUNERS.register("prumerge")
class PruMerge(Pruner):
    """LLaVA-PruMerge: adaptive IQR selection on CLS attention, kNN key merging (`variant`: paper | release)."""

    needs = frozenset({"importance", "keys"})
    plus = False

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        variant = cls.variant_of(cfg)
        if variant not in VARIANTS:
            raise ConfigError(f"pruning.variant={variant}; choose one of {', '.join(VARIANTS)}")
        k = cfg.get("k")
        if k is not None and (not isinstance(k, int) or k < 1):
            raise ConfigError(
                f"pruning.k={k!r} must be a positive number of neighbours (null: scaled to the grid)"
            )

    @staticmethod
    def variant_of(cfg: DictConfig) -> str:
        """`paper` (per-image IQR, weighted averages) or `release` (the released code's behaviour)."""
        return str(cfg.get("variant", "paper"))

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.release = self.variant_of(cfg) == "release"
        self.k = cfg.get("k")
        self.supplement = float(cfg.get("supplement", 3.0))

    def neighbours(self, tokens: int) -> int:
        """PruMerge's k = 32 on 576 tokens, scaled to this grid unless set."""
        return self.k or max(1, round(RELEASE_K * tokens / RELEASE_TOKENS))

    def plan(self, tokens, importance, keys, grid):
        tokens = grid[0] * grid[1]
        cap = None if self.ratio is None else budget(tokens, self.ratio)
        return prumerge_plan(
            importance,
            keys,
            plus=self.plus,
            release=self.release,
            k=self.neighbours(tokens),
            cap=cap,
            grid=grid,
            supplement=self.supplement,
        )


@PRUNERS.register("prumerge_plus")
class PruMergePlus(PruMerge):
    """PruMerge+: the IQR outliers plus a spatially uniform lattice (about 25% of tokens), then merged."""

    plus = True
