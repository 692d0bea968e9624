"""Worker processes decode and preprocess exactly what the main process would, in the same order, and a
corrupt file among them is one line naming it."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

from mmcompress.data.loading import pixel_batches, worker_count
from mmcompress.errors import ConfigError, UserError


def _to_tensor(size: int):
    def preprocess(images: list[Image.Image]) -> torch.Tensor:  # (B, 3, size, size)
        arrays = [torch.tensor(list(i.resize((size, size)).getdata()), dtype=torch.float32) for i in images]
        return torch.stack(arrays).reshape(len(images), size, size, 3).permute(0, 3, 1, 2) / 255

    return preprocess


@pytest.fixture
def paths(tmp_path):
    generator = torch.Generator().manual_seed(0)
    files = []
    for i in range(12):
        pixels = torch.randint(0, 256, (20, 20, 3), generator=generator, dtype=torch.uint8).numpy()
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(files[-1])
    return files


def test_workers_give_the_batches_of_the_main_process_in_order(paths):
    batches = [[3, 1, 4], [1, 5, 9, 2], [6], [5, 3, 5, 8, 9, 7], [11, 0]]
    preprocess = {"a": _to_tensor(8), "b": _to_tensor(4)}
    cpu = torch.device("cpu")
    alone = list(pixel_batches(paths, batches, preprocess, 0, cpu))
    workers = list(pixel_batches(paths, batches, preprocess, 2, cpu))
    assert len(alone) == len(workers) == 5
    for batch, one, many in zip(batches, alone, workers, strict=True):
        assert one["a"].shape == (len(batch), 3, 8, 8) and one["b"].shape == (len(batch), 3, 4, 4)
        direct = _to_tensor(8)([Image.open(paths[i]).convert("RGB") for i in batch])
        assert torch.equal(one["a"], direct) and torch.equal(many["a"], direct)
        assert torch.equal(one["b"], many["b"])


def test_a_corrupt_image_in_a_worker_is_one_line_naming_it(paths):
    paths[5].write_bytes(os.urandom(300))
    batches = [[0, 1], [2, 3], [4, 5], [6, 7]]
    loader = pixel_batches(paths, batches, {"a": _to_tensor(4)}, 2, torch.device("cpu"))
    assert next(loader)["a"].shape == (2, 3, 4, 4)  # the batches before it arrive
    next(loader)
    with pytest.raises(UserError) as excinfo:
        next(loader)
    message = str(excinfo.value)
    assert str(paths[5]) in message and "replace or remove it" in message and "\n" not in message


def test_worker_count(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert worker_count("auto") == 1  # one core stays with the model
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert worker_count("auto") == 8 and worker_count(3) == 3 and worker_count(0) == 0
    with pytest.raises(ConfigError, match="auto or an integer"):
        worker_count("many")
