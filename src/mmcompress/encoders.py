"""Vision experts: each owns its preprocessing and turns pixels into patch tokens on the common grid.

The contract (`VisionExpert`) is what the rest of the model relies on: `preprocess` (its own input size and
mean/std, from its own processor config), `patch_map` → its native (B, C, h, w) map, and `forward` → the
(B, H·W, C') tokens on the common grid (grid.py), row-major. `describe` records the real input size and
grids of every expert in the run directory, so a resolution mix-up (EAGLE's 336-vs-448) is visible.

Families register under the name their `family:` config key uses; each reads its own keys of the expert's
config (`select_layer`, `stage`, `input_size`, `max_patches`) and loads with `from_pretrained` (hub id or
local directory). A load that leaves any weight uninitialised is an error, never a warning.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import (
    AutoImageProcessor,
    CLIPVisionModel,
    ConvNextModel,
    ConvNextV2Model,
    Pix2StructVisionModel,
    SamVisionModel,
)

from mmcompress.errors import ConfigError, UserError
from mmcompress.grid import PatchMap, grid_channels, to_grid
from mmcompress.registry import Registry

EXPERTS: Registry[type[VisionExpert]] = Registry("expert family")
EXPERT_FILE = "mmcompress_expert.json"  # which family and feature selection a saved expert directory holds


class VisionExpert(nn.Module, ABC):
    """One vision encoder with its own preprocessing; outputs patch tokens on the common grid."""

    family: str
    model_classes: tuple[type, ...]
    load_options: Mapping = MappingProxyType({})  # extra from_pretrained arguments of the family

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
            model, info = model_class.from_pretrained(
                source,
                attn_implementation="eager",
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

    # ---- the data flow -----------------------------------------------------------------------------------
    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → this expert's model input, normalised with its own mean/std."""

    @abstractmethod
    def patch_map(self, inputs: torch.Tensor) -> PatchMap:
        """Model input → (B, C, h, w) features on the native grid."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return to_grid(self.patch_map(inputs), self.grid, self.to_grid_method)  # (B, H·W, C')

    # ---- persistence -------------------------------------------------------------------------------------
    def save_pretrained(self, directory: Path) -> None:
        """Write weights and processor so that `from_pretrained(directory)` restores this expert."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        (Path(directory) / EXPERT_FILE).write_text(json.dumps({"family": self.family, **self.spec}))

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


def _square_size(value: int | None, default: int) -> tuple[int, int]:
    size = int(value or default)
    if size <= 0:
        raise ConfigError(f"an expert input_size must be a positive number of pixels, not {value}")
    return (size, size)


@EXPERTS.register("clip")
class CLIPExpert(VisionExpert):
    """CLIPVisionModel; patch tokens of `select_layer` (LLaVA: the penultimate layer), CLS dropped. Any
    `input_size` works: position embeddings are interpolated (e.g. 448 from a 336 checkpoint, as EAGLE)."""

    family = "clip"
    model_classes = (CLIPVisionModel,)

    @property
    def input_size(self) -> tuple[int, int]:
        return _square_size(self.spec.get("input_size"), self.model.config.image_size)

    @property
    def native_grid(self) -> tuple[int, int]:
        patch = self.model.config.patch_size
        return (self.input_size[0] // patch, self.input_size[1] // patch)

    @property
    def native_channels(self) -> int:
        return self.model.config.hidden_size

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        height, width = self.input_size
        out = self.processor(
            images=list(images),
            size={"shortest_edge": height},
            crop_size={"height": height, "width": width},
            return_tensors="pt",
        )
        return out["pixel_values"]  # (B, 3, H, W)

    def patch_map(self, pixels: torch.Tensor) -> PatchMap:
        out = self.model(
            pixel_values=pixels.to(self.model.dtype),
            output_hidden_states=True,
            interpolate_pos_encoding=self.input_size[0] != self.model.config.image_size,
        )
        tokens = out.hidden_states[self.spec.get("select_layer", -2)][:, 1:]  # (B, h·w, C): CLS dropped
        return PatchMap(tokens.transpose(1, 2).unflatten(2, self.native_grid))  # (B, C, h, w)


@EXPERTS.register("convnext")
class ConvNeXtExpert(VisionExpert):
    """ConvNextModel / ConvNextV2Model; the feature map after `stage` (1–4; stride 4·2^(stage−1) for the
    usual patch size 4). EAGLE uses CLIP-ConvNeXt-XXL's last stage at 1024 px: stride 32, a 32×32 grid."""

    family = "convnext"
    model_classes = (ConvNextModel, ConvNextV2Model)

    @classmethod
    def model_class_for(cls, source: str) -> type:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(source, trust_remote_code=False).model_type
        except (OSError, ValueError):
            return ConvNextModel  # the load itself reports the problem
        return ConvNextV2Model if model_type == "convnextv2" else ConvNextModel

    @property
    def stage(self) -> int:
        stage = int(self.spec.get("stage", self.model.config.num_stages))
        if not 1 <= stage <= self.model.config.num_stages:
            raise ConfigError(
                f"encoder.experts.{self.name}.stage={stage}; this ConvNeXt has stages 1–{self.model.config.num_stages}"
            )
        return stage

    @property
    def stride(self) -> int:
        return self.model.config.patch_size * 2 ** (self.stage - 1)

    @property
    def input_size(self) -> tuple[int, int]:
        return _square_size(self.spec.get("input_size"), self.processor.size["shortest_edge"])

    @property
    def native_grid(self) -> tuple[int, int]:
        return (self.input_size[0] // self.stride, self.input_size[1] // self.stride)

    @property
    def native_channels(self) -> int:
        return self.model.config.hidden_sizes[self.stage - 1]

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        side = self.input_size[0]
        resized = [image.convert("RGB").resize((side, side), Image.BICUBIC) for image in images]
        out = self.processor(images=resized, do_resize=False, return_tensors="pt")
        return out["pixel_values"]  # (B, 3, H, W)

    def patch_map(self, pixels: torch.Tensor) -> PatchMap:
        out = self.model(pixel_values=pixels.to(self.model.dtype), output_hidden_states=True)
        return PatchMap(out.hidden_states[self.stage])  # (B, C, h, w): index 0 is the stem


@EXPERTS.register("sam")
class SAMExpert(VisionExpert):
    """SamVisionModel's neck output (256 channels for SAM-L at 64×64 from 1024 px); EAGLE pixel-unshuffles
    it ×2 onto 32×32×1024. Another `input_size` interpolates the absolute position embeddings once."""

    family = "sam"
    model_classes = (SamVisionModel,)

    def __init__(self, name: str, source: str, model: nn.Module, processor, spec: Mapping) -> None:
        super().__init__(name, source, model, processor, spec)
        side = int(self.spec.get("input_size") or model.config.image_size)
        if side != model.config.image_size:
            self._resize_position_embeddings(side)

    def _resize_position_embeddings(self, side: int) -> None:
        encoder, patch = self.model.vision_encoder, self.model.config.patch_size
        if side % patch:
            raise ConfigError(
                f"SAM expert '{self.name}': input_size {side} is not a multiple of its patch {patch}"
            )
        if encoder.pos_embed is not None:
            resized = F.interpolate(
                encoder.pos_embed.data.permute(0, 3, 1, 2),
                size=(side // patch, side // patch),
                mode="bicubic",
                align_corners=False,
            )  # (1, C, h, w)
            encoder.pos_embed = nn.Parameter(resized.permute(0, 2, 3, 1).contiguous())  # (1, h, w, C)
        encoder.patch_embed.image_size = (side, side)
        self.model.config.image_size = side  # a saved copy then reloads at this size

    @property
    def input_size(self) -> tuple[int, int]:
        return _square_size(None, self.model.config.image_size)

    @property
    def native_grid(self) -> tuple[int, int]:
        side = self.model.config.image_size // self.model.config.patch_size
        return (side, side)

    @property
    def native_channels(self) -> int:
        return self.model.config.output_channels

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        side = self.input_size[0]
        resized = [image.convert("RGB").resize((side, side), Image.BILINEAR) for image in images]
        out = self.processor(images=resized, do_resize=False, do_pad=False, return_tensors="pt")
        return out["pixel_values"]  # (B, 3, H, W) with SAM's own mean/std, not CLIP's

    def patch_map(self, pixels: torch.Tensor) -> PatchMap:
        return PatchMap(
            self.model(pixel_values=pixels.to(self.model.dtype)).last_hidden_state
        )  # (B, C, h, w)


@EXPERTS.register("pix2struct")
class Pix2StructExpert(VisionExpert):
    """Pix2StructVisionModel at its own variable resolution: each image is resized, aspect kept, to at most
    `max_patches` patches; the 2-D map is rebuilt from the row/column ids and padding is never resampled."""

    family = "pix2struct"
    model_classes = (Pix2StructVisionModel,)
    # Full Pix2Struct checkpoints name the vision tower encoder.*
    load_options = MappingProxyType({"key_mapping": {r"^encoder\.": ""}})

    @property
    def max_patches(self) -> int:
        return int(self.spec.get("max_patches") or self.processor.max_patches)

    @property
    def patch(self) -> int:
        return self.processor.patch_size["height"]

    @property
    def native_grid(self) -> tuple[int, int]:
        """The grid of a square image: the processor fits ⌊√max_patches⌋ patches a side (up to rounding)."""
        side = math.isqrt(self.max_patches)
        return (side, side)

    @property
    def input_size(self) -> tuple[int, int]:
        side = self.native_grid[0] * self.patch
        return (side, side)

    @property
    def native_channels(self) -> int:
        return self.model.config.hidden_size

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        out = self.processor(
            images=[image.convert("RGB") for image in images],
            max_patches=self.max_patches,
            return_tensors="pt",
        )
        return out["flattened_patches"]  # (B, P, 2 + p·p·3): 1-based row id, column id, then pixels

    def patch_map(self, patches: torch.Tensor) -> PatchMap:
        rows, cols = patches[..., 0].long(), patches[..., 1].long()  # (B, P); 0 on padding
        valid = rows > 0
        layer = self.spec.get("select_layer")  # None: the last layer, after the final layer norm
        out = self.model(
            flattened_patches=patches.to(self.model.dtype),
            attention_mask=valid.long(),
            output_hidden_states=layer is not None,
        )
        tokens = out.last_hidden_state if layer is None else out.hidden_states[layer]  # (B, P, C)
        height, width = int(rows.max()), int(cols.max())
        batch, _, channels = tokens.shape
        index = ((rows - 1).clamp(min=0) * width + (cols - 1).clamp(min=0)).masked_fill(
            ~valid, height * width
        )
        grid = tokens.new_zeros(batch, height * width + 1, channels)  # one spare slot swallows padding
        grid.scatter_(1, index[..., None].expand(-1, -1, channels), tokens)
        features = grid[:, :-1].transpose(1, 2).unflatten(2, (height, width))  # (B, C, h, w)
        extent = torch.stack([rows.amax(1), cols.amax(1)], dim=1)  # (B, 2) each image's own rows, cols
        return PatchMap(features, extent)
