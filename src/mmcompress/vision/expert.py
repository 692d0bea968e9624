"""The vision-expert contract: what the rest of the model relies on, whatever the family.

An expert owns its preprocessing (`preprocess`: its own input size and mean/std, from its own processor
config) and turns model input into its native patch map (`patch_map` → (B, C, h, w)). The model then
brings the map onto the common grid (grid.py) and, when pruning reads them, computes the signals
(signals.py) from what the expert declares it offers: a summary query whose attention ranks the patches
(`summary_query`: [CLS] for CLIP and DINOv2, the pooling head's probe for SigLIP; filled into the patch map
on request) or, without one, the importance measured best for it (`importance_without_cls`). `describe` records the real input size and grids in the run directory, so a
resolution mix-up (EAGLE's 336-vs-448) is visible.

Each family is one file in `families/`, registered in `EXPERTS` under the name its `family:` config key
uses; it loads with `from_pretrained` (hub id or local directory), and a load that leaves any weight
uninitialised is an error, never a warning. Experts keep the library's default attention (sdpa, 2–3× faster
than eager): pruning signals come from the attending layer's own queries and keys, not from attention maps.
A family with a mini version also says how to build it (`mini_model`) and which pretraining objectives suit
it (`mini_objectives`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import torch
from omegaconf import DictConfig
from PIL import Image
from torch import nn
from transformers import AutoImageProcessor

from mmcompress.errors import ConfigError, UserError
from mmcompress.registry import Registry
from mmcompress.vision.grid import PatchMap, grid_channels

EXPERTS: Registry[type[VisionExpert]] = Registry("expert family")
ENCODE_BATCH = 256  # images per forward pass when a whole split is encoded (feature store, pretraining)
ATTENTION_FORMS = ("heads_mean", "single_softmax")  # how [CLS] attention is read (pruning.attention)


class VisionExpert(nn.Module, ABC):
    """One vision encoder with its own preprocessing; yields its native patch map."""

    family: ClassVar[str]
    model_classes: ClassVar[tuple[type, ...]]
    load_options: ClassVar[Mapping] = MappingProxyType({})  # extra from_pretrained arguments of the family
    # What the expert offers visual-token pruning:
    # the query whose attention over the patches ranks them ("[CLS]", SigLIP's "pooling-head probe"): its
    # patch map can carry that attention and the attending layer's keys of the patches
    summary_query: ClassVar[str | None] = None
    importance_without_cls: ClassVar[str | None] = None  # `distinct` or `norm`: measured best for it
    # Mini experts pretrained in the synthetic world (empty: the family has no mini version):
    mini_objectives: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, source: str, model: nn.Module, processor, spec: Mapping) -> None:
        super().__init__()
        self.name = name
        self.source = source  # hub id or directory the weights came from
        self.model = model
        self.processor = processor
        self.spec = dict(spec)  # this expert's config: feature selection, input size, path onto the grid
        self.to_grid_method = self.spec.get("to_grid") or "interpolate"
        self.common_grid: tuple[int, int] | None = None  # set by `place_on_grid`; until then its own

    @classmethod
    def from_pretrained(cls, name: str, source: str, spec: Mapping) -> VisionExpert:
        """Load weights and processor from a hub id or a local directory; uninitialised weights are an error."""
        model_class = cls.model_class_for(source)
        try:
            # no attn_implementation: the library's fastest (sdpa where the family has it)
            model, info = model_class.from_pretrained(
                source,
                output_loading_info=True,
                trust_remote_code=False,  # an expert is a known architecture: never run a checkpoint's code
                **cls.load_options,
            )
            processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"cannot load {cls.family} expert '{name}' from '{source}': {str(exc).splitlines()[0]} "
                "— give a local directory or a hub id reachable from this machine"
            ) from None
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise UserError(
                f"{cls.family} expert '{name}': {len(missing)} weights are missing from '{source}' (e.g. "
                f"{missing[0]}), so it is not a {model_class.__name__} checkpoint; check "
                f"encoder.experts.{name}.checkpoint and family"
            )
        return cls(name, source, model, processor, spec)

    @classmethod
    def model_class_for(cls, source: str) -> type:
        return cls.model_classes[0]

    @classmethod
    def mini_model(cls, mini: DictConfig) -> tuple[nn.Module, object]:
        """A randomly initialised mini model of this family and its image processor, sized by `mini` (every
        family with `mini_objectives` builds one)."""
        raise NotImplementedError(f"the {cls.family} family declares mini objectives but no mini model")

    # ---- sizes -------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int]:
        """(H, W) pixels the expert actually sees."""

    @property
    @abstractmethod
    def native_grid(self) -> tuple[int, int]:
        """(h, w) of its own patch map for a square image."""

    @property
    @abstractmethod
    def native_channels(self) -> int: ...

    @property
    def grid(self) -> tuple[int, int]:
        """The common grid this expert's tokens land on."""
        return self.common_grid or self.native_grid

    @property
    def channels(self) -> int:
        """Channels per token on the common grid."""
        return grid_channels(self.native_channels, self.native_grid, self.grid, self.to_grid_method)

    def place_on_grid(self, grid: tuple[int, int]) -> None:
        """Map this expert onto `grid`; an impossible mapping is a one-line ConfigError naming the fix."""
        self.common_grid = tuple(grid)
        _ = self.channels  # validates the mapping

    def setting(self, key: str):
        """A feature-selection key every config of this family must set (no hidden code default)."""
        if key not in self.spec:
            raise ConfigError(
                f"encoder.experts.{self.name}.{key} is not set; every {self.family} expert config names it "
                f"(see conf/encoder/{self.family}.yaml)"
            )
        return self.spec[key]

    # ---- the expert's part of the data flow --------------------------------------------------------------
    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → this expert's model input, normalised with its own mean/std."""

    @abstractmethod
    def patch_map(self, inputs: torch.Tensor, cls_attention_form: str | None = None) -> PatchMap:
        """Model input → (B, C, h, w) features on the native grid. With `cls_attention_form` (one of
        ATTENTION_FORMS; only for experts with a `summary_query`), the map also carries that query's
        attention over the patches and the attending layer's keys of them, from the same forward pass."""

    # ---- persistence -------------------------------------------------------------------------------------
    def save_pretrained(self, directory: Path) -> None:
        """Write weights and processor so that `from_pretrained(directory)` restores this expert."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)

    def describe(self) -> dict:
        """What the run directory records, so a resolution mix-up is visible."""
        return {
            "family": self.family,
            "source": self.source,
            "input_size": list(self.input_size),
            "native_grid": list(self.native_grid),
            "native_channels": self.native_channels,
            "to_grid": self.to_grid_method,
            "grid": list(self.grid),
            "channels": self.channels,
        }


def square_size(value: int | None, default: int) -> tuple[int, int]:
    """(side, side) pixels from a config value, or the checkpoint's own `default` when it is null."""
    size = int(value or default)
    if size <= 0:
        raise ConfigError(f"an expert input_size must be a positive number of pixels, not {value}")
    return (size, size)
