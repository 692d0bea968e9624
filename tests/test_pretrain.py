"""Mini-expert pretraining: per-patch labels, a reduced-scale rebuild, and the from_pretrained path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionModel

from mmcompress.config import load_config
from mmcompress.encoders import CLIPExpert
from mmcompress.pretrain import SHIPPED_WEIGHTS, _patch_majority, ensure_mini_expert, mini_expert_dir

from .conftest import cli


def test_patch_majority_labels_each_patch_by_its_dominant_item():
    masks = torch.zeros(1, 4, 4, dtype=torch.long)  # 2×2 patches of 2×2 pixels
    masks[0, :2, :2] = 1  # patch 0 fully item 1
    masks[0, 0, 2] = 2  # patch 1: a quarter item 2 → still background (needs > ~25%)
    masks[0, 2:, 0:2] = torch.tensor([[3, 3], [0, 0]])  # patch 2: half item 3 → item 3
    assert _patch_majority(masks, 2).tolist() == [[1, 0, 3, 0]]


@pytest.mark.parametrize("objective", ["dense", "contrastive", "dense+contrastive"])
def test_reduced_scale_rebuild_loads_like_a_real_checkpoint(compose, objective):
    cfg = compose(f"encoder.experts.clip.mini.objective={objective}", "pretrain.steps=3")
    path = ensure_mini_expert(cfg.encoder.experts.clip, cfg)
    assert path == mini_expert_dir(cfg.encoder.experts.clip, cfg)
    metrics = json.loads((path / "pretrain_metrics.json").read_text())
    assert metrics["objective"] == objective and metrics["steps"] == 3
    model = CLIPVisionModel.from_pretrained(path)
    assert model.config.image_size == cfg.world.image_size and model.config.patch_size == 8
    expert = CLIPExpert.from_pretrained("clip", str(path), select_layer=-2)
    assert expert.grid == (8, 8) and expert.channels == 128


def test_dense_pretraining_learns_patch_colours(compose):
    cfg = compose("pretrain.steps=60", "pretrain.batch_size=32", "world.train_images=200")
    path = ensure_mini_expert(cfg.encoder.experts.clip, cfg)
    accuracy = json.loads((path / "pretrain_metrics.json").read_text())["patch_accuracy"]
    assert accuracy["color"] > 0.6  # 7 classes: chance is ~0.17 on covered patches


def test_cli_pretrain_expert_is_cached(cache_dir):
    first = cli("pretrain-expert", "clip", "debug=fast").stdout.strip()
    metrics = Path(first) / "pretrain_metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert cli("pretrain-expert", "clip", "debug=fast").stdout.strip() == first
    assert metrics.stat().st_mtime_ns == stamp
    bad = cli("pretrain-expert", "sam", "debug=fast", check=False)
    assert bad.returncode != 0 and "expert 'sam' is not in encoder=clip" in bad.stderr


def test_default_recipe_ships_with_the_package():
    """If the default recipe changes, rebuild and ship it: `mmcompress pretrain-expert clip --ship`."""
    cfg = load_config([])
    name = mini_expert_dir(cfg.encoder.experts.clip, cfg).name
    shipped = SHIPPED_WEIGHTS / name
    assert (shipped / "model.safetensors").is_file(), (
        f"{name} is not shipped; run `mmcompress pretrain-expert clip --ship`"
    )
    metrics = json.loads((shipped / "pretrain_metrics.json").read_text())
    assert metrics["steps"] == cfg.pretrain.steps and metrics["patch_accuracy"]["shape"] > 0.9
    assert ensure_mini_expert(cfg.encoder.experts.clip, cfg) == shipped  # found without building
