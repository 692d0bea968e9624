"""EAGLE's four experts at their published architecture sizes (random weights, nothing downloaded) land on
the 32×32 grid with the channel counts the paper's mixture has: the class of resolution and channel bug
EAGLE shipped (its CLIP silently ran at 336 instead of 448)."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from PIL import Image

from mmcompress.model.fusion import FUSIONS
from mmcompress.model.multimodal import encode_expert
from mmcompress.vision.families.clip import CLIPExpert
from mmcompress.vision.families.convnext import ConvNeXtExpert
from mmcompress.vision.families.pix2struct import Pix2StructExpert
from mmcompress.vision.families.sam import SAMExpert

pytestmark = pytest.mark.slow


def _published_experts():
    torch.manual_seed(0)
    clip = tf.CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14,
    )  # fmt: skip  # openai/clip-vit-large-patch14-336
    convnext = tf.ConvNextConfig(hidden_sizes=[384, 768, 1536, 3072], depths=[3, 4, 30, 3])  # ConvNeXt-XXL
    sam = tf.SamVisionConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23],
        mlp_dim=4096, image_size=1024, patch_size=16, output_channels=256,
    )  # fmt: skip  # facebook/sam-vit-large
    pix2struct = tf.Pix2StructVisionConfig(
        hidden_size=1536, num_hidden_layers=18, num_attention_heads=24, d_kv=64, d_ff=3968,
        patch_embed_hidden_size=16 * 16 * 3,
    )  # fmt: skip  # google/pix2struct-large
    return {
        "clip": CLIPExpert(
            "clip", "random", tf.CLIPVisionModel(clip), tf.CLIPImageProcessorPil(),
            {"select_layer": -2, "input_size": 448},
        ),
        "convnext": ConvNeXtExpert(
            "convnext", "random", tf.ConvNextModel(convnext), tf.ConvNextImageProcessorPil(),
            {"stage": 4, "input_size": 1024},
        ),
        "sam": SAMExpert(
            "sam", "random", tf.SamVisionModel(sam), tf.SamImageProcessorPil(), {"to_grid": "unshuffle"}
        ),
        "pix2struct": Pix2StructExpert(
            "pix2struct", "random", tf.Pix2StructVisionModel(pix2struct),
            tf.Pix2StructImageProcessorPil(max_patches=2048), {"max_patches": 2048},
        ),
    }  # fmt: skip


@torch.no_grad()
def test_eagle_mixture_at_published_sizes_lands_on_32x32():
    experts = _published_experts()
    for expert in experts.values():
        expert.place_on_grid((32, 32))
    described = {name: e.describe() for name, e in experts.items()}
    assert {n: d["input_size"] for n, d in described.items()} == {
        "clip": [448, 448], "convnext": [1024, 1024], "sam": [1024, 1024], "pix2struct": [720, 720],
    }  # fmt: skip
    assert {n: d["native_grid"] for n, d in described.items()} == {
        "clip": [32, 32], "convnext": [32, 32], "sam": [64, 64], "pix2struct": [45, 45],
    }  # fmt: skip
    image = [Image.new("RGB", (640, 640), (200, 30, 30))]
    tokens = {name: encode_expert(e.eval(), e.preprocess(image), None).tokens for name, e in experts.items()}
    assert {n: tuple(t.shape) for n, t in tokens.items()} == {
        "clip": (1, 1024, 1024), "convnext": (1, 1024, 3072), "sam": (1, 1024, 1024), "pix2struct": (1, 1024, 1536),
    }  # fmt: skip
    fused = FUSIONS["concat"]({n: e.channels for n, e in experts.items()}, (32, 32), {})(tokens)
    assert fused.shape == (1, 1024, 1024 + 3072 + 1024 + 1536) and torch.isfinite(fused).all()
