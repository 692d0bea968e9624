"""A configured dataset's splits: the LLaVA-format loader over `data.path`, or the generated synthvqa world."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from mmcompress.data.llava import Split, load_split
from mmcompress.data.world import world_dir
from mmcompress.errors import UserError


def dataset_dir(cfg: DictConfig) -> Path:
    """The directory holding `<split>.json`: the generated world for synthvqa, `data.path` otherwise."""
    if cfg.data.name == "synthvqa":
        return world_dir(cfg)
    path = Path(str(cfg.data.path)).expanduser()
    if not path.is_dir():
        raise UserError(
            f"data path {path} does not exist; set data.path to a directory of <split>.json files"
        )
    return path


def load(cfg: DictConfig, split: str) -> Split:
    """Load one split (`train`, `val` or `test`, renamed through data.splits)."""
    root = dataset_dir(cfg)
    folder = Path(str(cfg.data.get("image_folder") or root)).expanduser()
    limit = cfg.data.max_train_samples if split == "train" else None
    return load_split(root / f"{cfg.data.splits[split]}.json", folder, cfg.data.image_position, limit=limit)
