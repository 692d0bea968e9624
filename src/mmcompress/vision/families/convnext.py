"""ConvNeXt: `ConvNextModel` / `ConvNextV2Model`, the feature map after `stage` (1–4; stride 4·2^(stage−1)
for the usual patch size 4). EAGLE uses CLIP-ConvNeXt-XXL's last stage at 1024 px: stride 32, a 32×32 grid.
No [CLS] token: pruning ranks its tokens by their feature norm (measured best, experiments/pruning-signals).
It runs channels-last: 1.13–1.25× faster in fp32 on a CPU, no change under bf16 (benchmarks/speedups.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import transformers as hf
from omegaconf import DictConfig
from PIL import Image

from mmcompress.errors import ConfigError
from mmcompress.vision.expert import EXPERTS, VisionExpert, square_size
from mmcompress.vision.grid import PatchMap


@EXPERTS.register("convnext")
class ConvNeXtExpert(VisionExpert):
    family = "convnext"
    model_classes = (hf.ConvNextModel, hf.ConvNextV2Model)
    importance_without_cls = "norm"
    mini_objectives = ("attributes",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model.to(
            memory_format=torch.channels_last
        )  # its convolutions' fast layout; .to(device) keeps it

    @classmethod
    def model_class_for(cls, source: str) -> type:
        try:
            model_type = hf.AutoConfig.from_pretrained(source, trust_remote_code=False).model_type
        except (OSError, ValueError):
            return hf.ConvNextModel  # the load itself reports the problem
        return hf.ConvNextV2Model if model_type == "convnextv2" else hf.ConvNextModel

    @classmethod
    def mini_model(cls, mini: DictConfig):
        config = hf.ConvNextConfig(
            hidden_sizes=list(mini.hidden_sizes),
            depths=list(mini.depths),
            patch_size=mini.patch_size,
        )
        processor = hf.ConvNextImageProcessorPil(size={"shortest_edge": mini.image_size}, crop_pct=1.0)
        return hf.ConvNextModel(config), processor

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
        return square_size(self.spec.get("input_size"), self.processor.size["shortest_edge"])

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

    def patch_map(self, pixels: torch.Tensor, cls_attention_form: str | None = None) -> PatchMap:
        pixels = pixels.to(self.model.dtype).contiguous(memory_format=torch.channels_last)  # (B, 3, H, W)
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return PatchMap(out.hidden_states[self.stage])  # (B, C, h, w): index 0 is the stem
