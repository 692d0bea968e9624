"""Pix2Struct: `Pix2StructVisionModel` at its own variable resolution. Each image is resized, aspect kept, to
at most `max_patches` patches; the 2-D map is rebuilt from the row/column ids and padding is never resampled.
No [CLS] token: pruning ranks its tokens by how distinct they are (measured best, experiments/pruning-signals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import MappingProxyType

import torch
import transformers as hf
from omegaconf import DictConfig
from PIL import Image

from mmcompress.vision.expert import EXPERTS, VisionExpert
from mmcompress.vision.grid import PatchMap


@EXPERTS.register("pix2struct")
class Pix2StructExpert(VisionExpert):
    family = "pix2struct"
    model_classes = (hf.Pix2StructVisionModel,)
    # Full Pix2Struct checkpoints name the vision tower encoder.*
    load_options = MappingProxyType({"key_mapping": {r"^encoder\.": ""}})
    importance_without_cls = "distinct"
    mini_objectives = ("reading",)

    @classmethod
    def mini_model(cls, mini: DictConfig):
        patch = mini.patch_size
        config = hf.Pix2StructVisionConfig(
            hidden_size=mini.hidden_size,
            num_hidden_layers=mini.layers,
            num_attention_heads=mini.heads,
            d_kv=mini.hidden_size // mini.heads,
            d_ff=4 * mini.hidden_size,
            patch_embed_hidden_size=patch * patch * 3,
            seq_len=mini.max_patches,  # row/column id tables: a very wide image may have max_patches columns
            initializer_range=mini.initializer_range,
        )
        processor = hf.Pix2StructImageProcessorPil(
            patch_size={"height": patch, "width": patch}, max_patches=mini.max_patches
        )
        return hf.Pix2StructVisionModel(config), processor

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

    def patch_map(self, patches: torch.Tensor, cls_attention_form: str | None = None) -> PatchMap:
        rows, cols = patches[..., 0].long(), patches[..., 1].long()  # (B, P); 0 on padding
        valid = rows > 0
        layer = self.spec.get("select_layer")  # null (its yaml's value): the last layer, after the final norm
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
