"""The synthetic world's images and their labels, as mini-expert pretraining reads them: per-pixel item
masks and each item's colour, shape and word, turned into per-patch and per-image labels, plus captions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmcompress.data import synthvqa
from mmcompress.errors import ConfigError

_BACKGROUND_WEIGHT = 0.34  # an item covering more than ~25% of a patch labels it


class WorldScenes:
    """A split's images, per-pixel item masks and per-item colour / shape / word, plus captions."""

    def __init__(self, root: Path, split: str) -> None:
        scenes = json.loads((root / "scenes" / f"{split}.json").read_text())
        self.paths = [root / s["image"] for s in scenes]
        self.masks = torch.from_numpy(
            np.load(root / "scenes" / f"{split}_masks.npz")["masks"]
        ).long()  # (n, H, W)
        colors = {c: i + 1 for i, c in enumerate(synthvqa.COLORS)}
        shapes = {s: i + 1 for i, s in enumerate([*synthvqa.SHAPES, "word"])}
        words = {w: i + 1 for i, w in enumerate(synthvqa.WORDS)}
        max_items = 1 + max(len(s["items"]) for s in scenes)
        n = len(scenes)
        self.item_labels = {
            k: torch.zeros(n, max_items, dtype=torch.long) for k in ("color", "shape", "word")
        }
        for i, scene in enumerate(scenes):  # label lookup tables: row i, column j = items[j - 1]
            for j, it in enumerate(scene["items"], start=1):
                self.item_labels["color"][i, j] = colors.get(it.get("color"), 0)
                self.item_labels["shape"][i, j] = (
                    shapes["word"] if it["kind"] == "word" else shapes[it["shape"]]
                )
                self.item_labels["word"][i, j] = words.get(it.get("word"), 0)
        self.classes = {"color": len(colors) + 1, "shape": len(shapes) + 1, "word": len(words) + 1}
        # Image-level attributes: which colours, shapes (incl. text) and words appear, as multi-hot columns.
        present = [F.one_hot(t, self.classes[k])[:, :, 1:].amax(1) for k, t in self.item_labels.items()]
        self.present = torch.cat(present, dim=1).bool()  # (n, A)
        bounds = np.cumsum([0, *(self.classes[k] - 1 for k in self.item_labels)])
        self.attribute_groups = {
            k: list(range(bounds[i], bounds[i + 1])) for i, k in enumerate(self.item_labels)
        }
        self.captions = [s["caption"] for s in scenes]
        self.object_count = torch.tensor(
            [sum(it["kind"] != "word" for it in s["items"]) for s in scenes]
        )  # (n,)

    def __len__(self) -> int:
        return len(self.paths)

    def patch_labels(self, grid: tuple[int, int], kinds: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """{kind: (n, h·w)} label of the item covering most of each grid cell (0 = background)."""
        item = _patch_majority(self.masks, grid)  # (n, h·w): 0 = background, j = items[j - 1]
        return {k: self.item_labels[k].gather(1, item) for k in kinds}


def _patch_majority(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(n, H, W) item ids → (n, h·w) the item covering most of each grid cell (background down-weighted)."""
    n, height, width = masks.shape
    rows, cols = grid
    if height % rows or width % cols:
        raise ConfigError(f"a {height}×{width} world image does not divide into a {rows}×{cols} patch grid")
    ph, pw = height // rows, width // cols
    blocks = masks.reshape(n, rows, ph, cols, pw).permute(0, 1, 3, 2, 4).reshape(n, rows * cols, ph * pw)
    counts = F.one_hot(blocks, int(masks.max()) + 1).sum(2).float()  # (n, h·w, items + 1)
    counts[..., 0] *= _BACKGROUND_WEIGHT
    return counts.argmax(-1)
