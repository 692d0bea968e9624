"""Mini-expert pretraining: per-patch labels, a reduced-scale rebuild, and the from_pretrained path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionModel

from mmcompress.config import load_config
from mmcompress.training.mini_experts.cache import SHIPPED_WEIGHTS, ensure_mini_expert, mini_expert_dir
from mmcompress.training.mini_experts.scenes import _patch_majority
from mmcompress.vision.families.clip import CLIPExpert
from tests.conftest import cli


def test_patch_majority_labels_each_patch_by_its_dominant_item():
    masks = torch.zeros(1, 4, 4, dtype=torch.long)  # 2×2 patches of 2×2 pixels
    masks[0, :2, :2] = 1  # patch 0 fully item 1
    masks[0, 0, 2] = 2  # patch 1: a quarter item 2 → still background (needs > ~25%)
    masks[0, 2:, 0:2] = torch.tensor([[3, 3], [0, 0]])  # patch 2: half item 3 → item 3
    assert _patch_majority(masks, (2, 2)).tolist() == [[1, 0, 3, 0]]


@pytest.mark.parametrize("objective", ["dense", "contrastive", "dense+contrastive"])
def test_reduced_scale_rebuild_loads_like_a_real_checkpoint(compose, objective):
    cfg = compose(f"encoder.experts.clip.mini.objective={objective}", "pretrain.steps=3")
    path = ensure_mini_expert(cfg.encoder.experts.clip, cfg)
    assert path == mini_expert_dir(cfg.encoder.experts.clip, cfg)
    metrics = json.loads((path / "pretrain_metrics.json").read_text())
    assert metrics["objective"] == objective and metrics["steps"] == 3
    model = CLIPVisionModel.from_pretrained(path)
    assert (
        model.config.image_size == cfg.encoder.experts.clip.mini.image_size and model.config.patch_size == 8
    )
    expert = CLIPExpert.from_pretrained("clip", str(path), {"select_layer": -2})
    assert expert.grid == (8, 8) and expert.channels == 128


@pytest.mark.parametrize(
    ("family", "probe", "grid", "channels"),
    [
        ("convnext", "image_accuracy", (8, 8), 128),  # stage 3 of 128 px at stride 16
        ("sam", "patch_accuracy", (8, 8), 256),  # 16×16×64 neck, pixel-unshuffled ×2
        ("pix2struct", "patch_accuracy", (8, 8), 96),  # 8×8 patches of 16 px
    ],
)
def test_each_family_pretrains_its_mini_expert_and_loads_it(compose, family, probe, grid, channels):
    from mmcompress.model.build import load_experts

    cfg = compose(f"encoder=clip+{family}", "pretrain.steps=3", "grid=[8,8]")
    path = ensure_mini_expert(cfg.encoder.experts[family], cfg)
    metrics = json.loads((path / "pretrain_metrics.json").read_text())
    assert metrics["objective"] == cfg.encoder.experts[family].mini.objective and metrics[probe]
    experts = load_experts(cfg, lambda name, expert: ensure_mini_expert(expert, cfg))
    assert experts[family].grid == grid and experts[family].channels == channels


def test_dense_pretraining_learns_patch_colours(compose):
    cfg = compose("pretrain.steps=60", "pretrain.batch_size=32", "world.train_images=200")
    path = ensure_mini_expert(cfg.encoder.experts.clip, cfg)
    accuracy = json.loads((path / "pretrain_metrics.json").read_text())["patch_accuracy"]
    assert accuracy["color"] > 0.6  # 7 classes: chance is ~0.17 on covered patches


@pytest.mark.slow  # an end-to-end CLI run
def test_cli_pretrain_expert_is_cached(cache_dir):
    first = cli("pretrain-expert", "clip", "debug=fast").stdout.strip()
    metrics = Path(first) / "pretrain_metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert cli("pretrain-expert", "clip", "debug=fast").stdout.strip() == first
    assert metrics.stat().st_mtime_ns == stamp
    bad = cli("pretrain-expert", "vit", "debug=fast", check=False)
    assert bad.returncode != 0 and "unknown encoder 'vit'" in bad.stderr
    real = cli("pretrain-expert", "clip", "encoder=clip-l336", check=False)
    assert real.returncode != 0 and "real checkpoint" in real.stderr


# The probe each shipped expert must clear on val: what its objective makes it good at.
SHIPPED_PROBES = {
    "clip": ("patch_accuracy", "shape", 0.9),
    "convnext": ("image_accuracy", "color", 0.8),
    "sam": ("patch_accuracy", "shape", 0.8),
    "pix2struct": ("patch_accuracy", "word", 0.8),
}


@pytest.mark.parametrize("family", list(SHIPPED_PROBES))
def test_default_recipes_ship_with_the_package(family):
    """If a default recipe changes, rebuild and ship it: `mmcompress pretrain-expert FAMILY --ship`."""
    cfg = load_config([f"encoder={family}"])
    expert = cfg.encoder.experts[family]
    name = mini_expert_dir(expert, cfg).name
    shipped = SHIPPED_WEIGHTS / name
    assert (shipped / "model.safetensors").is_file(), (
        f"{name} is not shipped; run `mmcompress pretrain-expert {family} --ship`"
    )
    metrics = json.loads((shipped / "pretrain_metrics.json").read_text())
    group, key, floor = SHIPPED_PROBES[family]
    assert metrics["steps"] == cfg.pretrain.steps and metrics[group][key] > floor
    assert ensure_mini_expert(expert, cfg) == shipped  # found without building
