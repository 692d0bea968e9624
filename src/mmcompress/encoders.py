"""Vision experts: each owns its preprocessing and turns pixels into patch features on its native grid.

The contract (`VisionExpert`) is what the rest of the model relies on: `preprocess` (its own input size and
mean/std, from its own processor config), `forward` → (B, h·w, C) patch tokens in row-major grid order,
and the attributes `grid`, `channels`, `input_size`. New families register under their config name.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import AutoImageProcessor, CLIPVisionModel

from mmcompress.errors import UserError
from mmcompress.registry import Registry

EXPERTS: Registry[type[VisionExpert]] = Registry("expert family")


class VisionExpert(nn.Module, ABC):
    """One vision encoder with its own preprocessing; outputs patch tokens on its native grid."""

    family: str

    def __init__(self, name: str, source: str) -> None:
        super().__init__()
        self.name = name
        self.source = source  # hub id or directory the weights came from

    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int]: ...

    @property
    @abstractmethod
    def grid(self) -> tuple[int, int]: ...

    @property
    @abstractmethod
    def channels(self) -> int: ...

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → (B, 3, H, W) pixels normalised with this expert's own mean/std."""

    @abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, h·w, C) patch tokens."""

    @abstractmethod
    def save_pretrained(self, directory: Path) -> None:
        """Write weights and processor so that `from_pretrained(directory)` restores this expert."""

    def describe(self) -> dict:
        """What the run directory records, so a resolution mix-up is visible."""
        return {
            "family": self.family,
            "source": self.source,
            "input_size": list(self.input_size),
            "grid": list(self.grid),
            "channels": self.channels,
        }


@EXPERTS.register("clip")
class CLIPExpert(VisionExpert):
    """CLIPVisionModel; patch tokens of `select_layer` (LLaVA: the penultimate layer), CLS dropped."""

    family = "clip"

    def __init__(self, name: str, source: str, model: CLIPVisionModel, processor, select_layer: int) -> None:
        super().__init__(name, source)
        self.model = model
        self.processor = processor
        self.select_layer = select_layer

    @classmethod
    def from_pretrained(cls, name: str, source: str, *, select_layer: int = -2, **_: object) -> CLIPExpert:
        try:
            model = CLIPVisionModel.from_pretrained(source, attn_implementation="eager")
            processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"cannot load CLIP expert '{name}' from '{source}': {str(exc).splitlines()[0]} "
                "— give a local directory or a hub id reachable from this machine"
            ) from None
        return cls(name, source, model, processor, select_layer)

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.model.config.image_size
        return (size, size)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.model.config.image_size // self.model.config.patch_size
        return (side, side)

    @property
    def channels(self) -> int:
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

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values.to(self.model.dtype), output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, 1:]  # (B, h·w, C): CLS dropped

    def save_pretrained(self, directory: Path) -> None:
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        (Path(directory) / "mmcompress_expert.json").write_text(
            json.dumps({"family": self.family, "select_layer": self.select_layer})
        )
