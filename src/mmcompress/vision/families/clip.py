"""CLIP: `CLIPVisionModel`, patch tokens of `select_layer` (LLaVA: the penultimate layer), [CLS] dropped.

Any `input_size` works: position embeddings are interpolated (e.g. 448 from a 336 checkpoint, as EAGLE).
Its [CLS] token ranks the patches for pruning (PruMerge's CLS attention, from the last layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import transformers as hf
from omegaconf import DictConfig
from PIL import Image

from mmcompress.vision.expert import EXPERTS, VisionExpert, square_size
from mmcompress.vision.grid import PatchMap
from mmcompress.vision.signals import cls_attention


@EXPERTS.register("clip")
class CLIPExpert(VisionExpert):
    family = "clip"
    model_classes = (hf.CLIPVisionModel,)
    summary_query = "[CLS]"
    mini_objectives = ("dense", "contrastive", "dense+contrastive")

    @classmethod
    def mini_model(cls, mini: DictConfig):
        config = hf.CLIPVisionConfig(
            hidden_size=mini.hidden_size,
            intermediate_size=4 * mini.hidden_size,
            num_hidden_layers=mini.layers,
            num_attention_heads=mini.heads,
            image_size=mini.image_size,
            patch_size=mini.patch_size,
        )
        size = mini.image_size
        processor = hf.CLIPImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
        return hf.CLIPVisionModel(config), processor

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
            images=list(images),
            size={"shortest_edge": height},
            crop_size={"height": height, "width": width},
            return_tensors="pt",
        )
        return out["pixel_values"]  # (B, 3, H, W)

    def patch_map(self, pixels: torch.Tensor, cls_attention_form: str | None = None) -> PatchMap:
        out = self.model(
            pixel_values=pixels.to(self.model.dtype),
            output_hidden_states=True,
            interpolate_pos_encoding=self.input_size[0] != self.model.config.image_size,
        )
        tokens = out.hidden_states[self.setting("select_layer")][:, 1:]  # (B, h·w, C): CLS dropped
        features = tokens.transpose(1, 2).unflatten(2, self.native_grid)  # (B, C, h, w)
        if cls_attention_form is None:
            return PatchMap(features)
        last = self.model.encoder.layers[-1]
        hidden = last.layer_norm1(out.hidden_states[-2])  # (B, 1+n, C): what its attention reads
        query = last.self_attn.q_proj(hidden[:, :1]).float()  # (B, 1, C)
        keys = last.self_attn.k_proj(hidden).float()  # (B, 1+n, C)
        attention = cls_attention(query, keys, last.self_attn.num_heads, cls_attention_form)  # (B, n)
        return PatchMap(features, cls_attention=attention, keys=keys[:, 1:])
