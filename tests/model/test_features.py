"""The frozen-feature store: encoded once, reused by the next run, never reused when anything it depends on
(weights, feature selection, input size, images) changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mmcompress.model import features as store_module
from mmcompress.model.features import encode_images, expert_key, images_key
from mmcompress.model.multimodal import encode_expert
from mmcompress.vision.families.clip import CLIPExpert
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
    first = encode_images({"clip": clip}, images, _open, torch.device("cpu"), store, "test")
    assert first["clip"].tokens.shape == (3, 16, 32)
    assert len(list(store.rglob("*.safetensors"))) == 1

    def fail(*_):
        raise AssertionError("encoded again instead of reading the store")

    monkeypatch.setattr(store_module, "_encode", fail)
    again = encode_images({"clip": clip}, images, _open, torch.device("cpu"), store, "test")
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
