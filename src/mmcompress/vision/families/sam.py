"""SAM: `SamVisionModel`'s neck output (256 channels for SAM-L at 64×64 from 1024 px); EAGLE pixel-unshuffles
it ×2 onto 32×32×1024. Another `input_size` interpolates the absolute position embeddings once.
No [CLS] token: pruning ranks its tokens by how distinct they are (measured best, experiments/pruning-signals).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import transformers as hf
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from mmcompress.errors import ConfigError
from mmcompress.vision.expert import EXPERTS, VisionExpert, square_size
from mmcompress.vision.grid import PatchMap


@EXPERTS.register("sam")
class SAMExpert(VisionExpert):
    family = "sam"
    model_classes = (hf.SamVisionModel,)
    importance_without_cls = "distinct"
    mini_objectives = ("masks",)

    def __init__(self, name: str, source: str, model: nn.Module, processor, spec: Mapping) -> None:
        super().__init__(name, source, model, processor, spec)
        side = int(self.spec.get("input_size") or model.config.image_size)
        if side != model.config.image_size:
            self._resize_position_embeddings(side)

    @classmethod
    def mini_model(cls, mini: DictConfig):
        config = hf.SamVisionConfig(
            hidden_size=mini.hidden_size,
            num_hidden_layers=mini.layers,
            num_attention_heads=mini.heads,
            mlp_dim=4 * mini.hidden_size,
            image_size=mini.image_size,
            patch_size=mini.patch_size,
            output_channels=mini.output_channels,
            window_size=mini.window_size,
            global_attn_indexes=list(mini.global_attn_indexes),
        )
        return hf.SamVisionModel(config), hf.SamImageProcessorPil()

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
        return square_size(None, self.model.config.image_size)

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

    def patch_map(self, pixels: torch.Tensor, cls_attention_form: str | None = None) -> PatchMap:
        return PatchMap(
            self.model(pixel_values=pixels.to(self.model.dtype)).last_hidden_state
        )  # (B, C, h, w)
