"""Shared fixtures: offline, W&B disabled, a per-session cache, and the real config tree composed tiny."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache (generated worlds, mini experts) for the whole session, never the user's own."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["MMCOMPRESS_CACHE"] = str(path)
    return path


@pytest.fixture
def compose(cache_dir, tmp_path):
    """Compose the real config tree with debug=fast and runs under tmp_path, plus any overrides."""
    from mmcompress.config import load_config

    def _compose(*overrides: str):
        return load_config(["debug=fast", "logger=none", f"paths.runs={tmp_path / 'runs'}", *overrides])

    return _compose


def cli(
    *args: str, env: dict | None = None, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run the installed `mmcompress` console script as a user would."""
    full_env = {**os.environ, **(env or {})}
    exe = Path(sys.executable).with_name("mmcompress")
    result = subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"mmcompress {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="session")
def fast_run(cache_dir, tmp_path_factory) -> Path:
    """One debug=fast run of every stage, shared by the tests that inspect a finished run directory."""
    runs = tmp_path_factory.mktemp("runs")
    result = cli("train", "debug=fast", "logger=none", f"paths.runs={runs}")
    return Path(result.stdout.strip().splitlines()[-1])


def tiny_llama(tokenizer, *, hidden: int = 32, layers: int = 2, heads: int = 4):
    """A randomly initialised Llama sized for unit tests, matching `tokenizer`'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def tiny_expert_checkpoint(family: str, directory: Path, *, v2: bool = False) -> Path:
    """A randomly initialised expert of `family` saved with `save_pretrained` (model and image processor),
    as a real checkpoint directory would be: CLIP 32 px / 8 px patches, ConvNeXt with stride 4–32, SAM at
    64 px with 8 px patches, Pix2Struct with 8 px patches and up to 64 of them, DINOv2 and SigLIP at 32 px
    with 8 px patches (SigLIP with its attention-pooling head)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if family == "clip":
        config = tf.CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8,
        )  # fmt: skip
        model = tf.CLIPVisionModel(config)
        processor = tf.CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
    elif family == "convnext":
        config_class = tf.ConvNextV2Config if v2 else tf.ConvNextConfig
        config = config_class(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], patch_size=4)
        model = (tf.ConvNextV2Model if v2 else tf.ConvNextModel)(config)
        processor = tf.ConvNextImageProcessorPil(size={"shortest_edge": 64}, crop_pct=1.0)
    elif family == "sam":
        config = tf.SamVisionConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8,
            output_channels=16, window_size=4, global_attn_indexes=[1], mlp_dim=64,
        )  # fmt: skip
        model = tf.SamVisionModel(config)
        processor = tf.SamImageProcessorPil()
    elif family == "dinov2":
        config = tf.Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=32, patch_size=8,
        )  # fmt: skip
        model = tf.Dinov2Model(config)
        processor = tf.BitImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        )  # fmt: skip
    elif family == "siglip":
        config = tf.SiglipVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8,
        )  # fmt: skip
        model = tf.SiglipVisionModel(config)
        processor = tf.SiglipImageProcessorPil(size={"height": 32, "width": 32})
    else:
        config = tf.Pix2StructVisionConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, d_kv=16, d_ff=64,
            patch_embed_hidden_size=8 * 8 * 3, seq_len=64,
        )  # fmt: skip
        model = tf.Pix2StructVisionModel(config)
        processor = tf.Pix2StructImageProcessorPil(patch_size={"height": 8, "width": 8}, max_patches=64)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
