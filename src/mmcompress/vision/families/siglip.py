"""SigLIP: `SiglipVisionModel`, patch tokens after its final layer norm (`select_layer: null`) or of an
earlier layer. SigLIP has no [CLS] token: its summary is the attention-pooling head, whose learned probe
attends to the final tokens. That probe's attention over the patches (head-averaged, or as one softmax) is
its importance for pruning, and the head's keys of the patches are its keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import transformers as hf
from PIL import Image
from torch import nn

from mmcompress.vision.expert import EXPERTS, VisionExpert, square_size
from mmcompress.vision.grid import PatchMap
from mmcompress.vision.signals import cls_attention


@EXPERTS.register("siglip")
class SigLIPExpert(VisionExpert):
    family = "siglip"
    model_classes = (hf.SiglipVisionModel,)
    summary_query = "pooling-head probe"

    def __init__(self, name: str, source: str, model: nn.Module, processor, spec: Mapping) -> None:
        super().__init__(name, source, model, processor, spec)
        if not model.config.vision_use_head:
            self.summary_query = None  # a checkpoint without the pooling head offers no attention signal

    @property
    def input_size(self) -> tuple[int, int]:
        return square_size(self.spec.get("input_size"), self.model.config.image_size)

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
            images=list(images), size={"height": height, "width": width}, return_tensors="pt"
        )
        return out["pixel_values"]  # (B, 3, H, W): resized whole, SigLIP's own mean/std

    def patch_map(self, pixels: torch.Tensor, cls_attention_form: str | None = None) -> PatchMap:
        layer = self.spec.get("select_layer")  # null (its yaml's value): after the final layer norm
        out = self.model(
            pixel_values=pixels.to(self.model.dtype),
            output_hidden_states=layer is not None,
            interpolate_pos_encoding=self.input_size[0] != self.model.config.image_size,
        )
        tokens = out.last_hidden_state if layer is None else out.hidden_states[layer]  # (B, h·w, C)
        features = tokens.transpose(1, 2).unflatten(2, self.native_grid)  # (B, C, h, w)
        if cls_attention_form is None:
            return PatchMap(features)
        head = self.model.head
        w_query, w_key, _ = head.attention.in_proj_weight.chunk(3)
        b_query, b_key, _ = head.attention.in_proj_bias.chunk(3)
        query = F.linear(head.probe, w_query, b_query).float().expand(len(tokens), -1, -1)  # (B, 1, C)
        keys = F.linear(out.last_hidden_state, w_key, b_key).float()  # (B, n, C): what the head attends
        attention = cls_attention(query, keys, head.attention.num_heads, cls_attention_form, patches_from=0)
        return PatchMap(features, cls_attention=attention, keys=keys)  # (B, n), (B, n, C)
