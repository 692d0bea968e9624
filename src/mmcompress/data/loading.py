"""Image decoding and every expert's preprocessing in worker processes, a few batches ahead of the model.

The caller gives the batches as lists of image indices, in order, so what each batch holds stays a pure
function of its (seed, stage, step); the workers only decide when it is ready. A file that cannot be read
is the same one-line error as on the main process, naming it: never a hang, never a worker's traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mmcompress.data.llava import open_image
from mmcompress.errors import ConfigError, UserError

Preprocess = Callable[[list[Image.Image]], torch.Tensor]  # images → (B, 3, H, W) model input
MAX_AUTO_WORKERS = 8


def worker_count(setting: int | str) -> int:
    """`train.num_workers`: `auto` is one worker per core the main process leaves, at most 8; 0 decodes on
    the main process."""
    if setting == "auto":
        return max(0, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 1))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ConfigError(f"train.num_workers={setting!r} must be auto or an integer ≥ 0 (0: no workers)")
    return setting


class _PixelBatches(Dataset):
    """Item k: batch k's images, decoded and preprocessed for every expert (or the error that stopped it)."""

    def __init__(self, paths: Sequence[Path | str], batches: Sequence[Sequence[int]], preprocess) -> None:
        self.paths, self.batches, self.preprocess = paths, batches, preprocess

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor] | str:
        try:
            images = [open_image(self.paths[i]) for i in self.batches[k]]
        except UserError as exc:  # handed back as its message: the main process raises it as one line
            return str(exc)
        return {name: preprocess(images) for name, preprocess in self.preprocess.items()}  # (B, 3, H, W) each


def pixel_batches(
    paths: Sequence[Path | str],
    batches: Sequence[Sequence[int]],
    preprocess: dict[str, Preprocess],
    workers: int,
    device: torch.device,
) -> Iterator[dict[str, torch.Tensor]]:
    """Every batch's model input per expert, in order, on `device`: decoded by `workers` processes two
    batches ahead each (pinned for a GPU, copied without blocking)."""
    pin = device.type == "cuda"
    loader = DataLoader(
        _PixelBatches(paths, batches, preprocess),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        pin_memory=pin,
    )
    for item in loader:
        if isinstance(item, str):
            raise UserError(item)
        yield {name: pixels.to(device, non_blocking=pin) for name, pixels in item.items()}
