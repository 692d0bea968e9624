"""DINOv2: `Dinov2Model`, patch tokens after its final layer norm (`select_layer: null`, what DINOv2-based
MLLMs read) or of an earlier layer, [CLS] dropped. Any `input_size` that is a multiple of the patch works:
the model interpolates its position embeddings. Its [CLS] token ranks the patches for pruning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import transformers as hf
from PIL import Image

from mmcompress.errors import ConfigError
from mmcompress.vision.expert import EXPERTS, VisionExpert, square_size
from mmcompress.vision.grid import PatchMap
from mmcompress.vision.signals import cls_attention


@EXPERTS.register("dinov2")
class DINOv2Expert(VisionExpert):
    family = "dinov2"
    model_classes = (hf.Dinov2Model,)
    summary_query = "[CLS]"

    @property
    def input_size(self) -> tuple[int, int]:
        size, patch = square_size(self.spec.get("input_size"), self.processor.crop_size["height"]), self.patch
        if size[0] % patch:
            raise ConfigError(
                f"encoder.experts.{self.name}.input_size={size[0]} is not a multiple of DINOv2's {patch} px "
                f"patch; give e.g. {max(1, round(size[0] / patch)) * patch}"
            )
        return size

    @property
    def patch(self) -> int:
        return self.model.config.patch_size

    @property
    def native_grid(self) -> tuple[int, int]:
        return (self.input_size[0] // self.patch, self.input_size[1] // self.patch)

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
        return out["pixel_values"]  # (B, 3, H, W) with DINOv2's own mean/std

    def patch_map(self, pixels: torch.Tensor, cls_attention_form: str | None = None) -> PatchMap:
        layer = self.spec.get("select_layer")  # null (its yaml's value): after the final layer norm
        out = self.model(pixel_values=pixels.to(self.model.dtype), output_hidden_states=True)
        tokens = (out.last_hidden_state if layer is None else out.hidden_states[layer])[:, 1:]  # (B, h·w, C)
        features = tokens.transpose(1, 2).unflatten(2, self.native_grid)  # (B, C, h, w)
        if cls_attention_form is None:
            return PatchMap(features)
        last = self.model.encoder.layer[-1]
        hidden = last.norm1(out.hidden_states[-2])  # (B, 1+n, C): what its attention reads
        query = last.attention.q_proj(hidden[:, :1]).float()  # (B, 1, C)
        keys = last.attention.k_proj(hidden).float()  # (B, 1+n, C)
        attention = cls_attention(query, keys, last.attention.num_attention_heads, cls_attention_form)
        return PatchMap(features, cls_attention=attention, keys=keys[:, 1:])  # (B, n), (B, n, C)
