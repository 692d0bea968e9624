"""The frozen-feature store: encoded once, reused by the next run, never reused when anything it depends on
(weights, feature selection, input size, images) changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file

from mmcompress.model import features as store_module
from mmcompress.model.features import (
    encode_images,
    estimated_bytes,
    expert_key,
    images_key,
    split_features,
)
from mmcompress.model.multimodal import encode_expert
from mmcompress.vision.families.clip import CLIPExpert
from mmcompress.vision.signals import SignalSpec
from tests.conftest import tiny_expert_checkpoint


@pytest.fixture
def clip(tmp_path):
    path = tiny_expert_checkpoint("clip", tmp_path / "clip")
    return CLIPExpert.from_pretrained("clip", str(path), {"select_layer": -1})


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, colour in enumerate(["red", "green", "blue"]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (32, 32), colour).save(paths[-1])
    return paths


def _open(path):
    return Image.open(path).convert("RGB")


def test_second_encoding_reads_the_store(clip, images, tmp_path, monkeypatch):
    store = tmp_path / "store"
    first = encode_images({"clip": clip}, images, torch.device("cpu"), store, "test")
    assert first["clip"].tokens.shape == (3, 16, 32)
    assert len(list(store.rglob("*.safetensors"))) == 1

    def fail(*_):
        raise AssertionError("encoded again instead of reading the store")

    monkeypatch.setattr(store_module, "_encode", fail)
    again = encode_images({"clip": clip}, images, torch.device("cpu"), store, "test")
    torch.testing.assert_close(again["clip"].tokens, first["clip"].tokens)
    with torch.no_grad():
        direct = encode_expert(clip, clip.preprocess([_open(p) for p in images]), None).tokens
    torch.testing.assert_close(first["clip"].tokens, direct)  # the store holds what the expert computes


def test_keys_change_with_weights_selection_input_size_and_images(clip, images, tmp_path):
    key = expert_key(clip)
    assert expert_key(clip) == key
    other_layer = CLIPExpert(clip.name, clip.source, clip.model, clip.processor, {"select_layer": -2})
    assert expert_key(other_layer) != key
    bigger = CLIPExpert(
        clip.name, clip.source, clip.model, clip.processor, {"select_layer": -1, "input_size": 48}
    )
    assert expert_key(bigger) != key
    frozen = CLIPExpert(
        clip.name, "elsewhere", clip.model, clip.processor, {"select_layer": -1, "frozen": True}
    )
    assert expert_key(frozen) == key  # where it was loaded from and whether it trains change no feature
    with torch.no_grad():
        clip.model.post_layernorm.weight.add_(1e-3)
    assert expert_key(clip) != key

    copy = tmp_path / "copy.png"
    copy.write_bytes(Path(images[0]).read_bytes())
    assert images_key([str(copy), *images[1:]]) == images_key(images)  # content, not path
    Image.new("RGB", (32, 32), "white").save(copy)
    assert images_key([str(copy), *images[1:]]) != images_key(images)


def test_the_images_are_hashed_once_then_found_by_path_size_and_time(images, tmp_path, monkeypatch):
    memo = tmp_path / "memo"
    key = images_key(images, memo=memo)
    assert key == images_key(images)  # the same content digest as without a memo

    def fail(*_):
        raise AssertionError("read the images again")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", fail)
        assert images_key(images, memo=memo) == key
    Image.new("RGB", (32, 32), "white").save(images[0])  # rewritten: a new modification time
    assert images_key(images, memo=memo) == images_key(images) != key


def test_the_size_estimate_is_what_the_store_holds(clip, images, tmp_path):
    spec = SignalSpec()
    store = tmp_path / "store"
    encode_images({"clip": clip}, images, torch.device("cpu"), store, "test", spec)
    held = sum(t.nbytes for f in store.rglob("*.safetensors") for t in load_file(f).values())
    assert estimated_bytes({"clip": clip}, len(images), spec) == held == 3 * 16 * (32 + 1 + 32) * 4


def test_a_split_too_large_for_its_store_runs_without_it(clip, images, tmp_path, capsys):
    store = tmp_path / "cache"
    cfg = OmegaConf.create(
        {
            "paths": {"cache": str(store)},
            "train": {"cache_features": "disk", "feature_store_max_gb": 1e-6, "num_workers": 0},
        }
    )
    cpu = torch.device("cpu")
    assert split_features({"clip": clip}, images, cfg, cpu, "train images") is None  # 6 KB > 1 KB
    assert "0.01 MB of features exceed train.feature_store_max_gb=1e-06" in capsys.readouterr().err
    assert not list(store.rglob("*.safetensors"))
    cfg.train.feature_store_max_gb = None
    stored = split_features({"clip": clip}, images, cfg, cpu, "train images")
    cfg.train.feature_store_max_gb = 1e-6  # already stored: read, whatever the cap
    torch.testing.assert_close(
        split_features({"clip": clip}, images, cfg, cpu, "x")["clip"].tokens, stored["clip"].tokens
    )
    memory = store_module.available_memory()  # cache_features=memory: checked against the available RAM
    assert "exceed the available memory" in store_module.room_for(memory, None, None)
    assert store_module.room_for(1024, None, None) is None
