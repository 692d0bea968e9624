"""Frozen experts' grid features, encoded once and kept on disk for every later run that needs them.

A sweep over fusion, pruning or LLM settings trains on the same frozen experts, so their features are
computed once per machine. The key covers everything that changes them: the expert's family, feature
selection, input size and grid (its `describe` and config), a digest of its weights, the bytes of the
images (hashed once: later runs find that digest by the files' paths, sizes and modification times), and the
version of the code and libraries that compute them. Anything else never reuses them. Pruning signals
(importance, keys) are stored beside the features, one file per signal setting, so cached sweeps can prune.
Before encoding, the size is estimated: a split whose features would not fit (the free disk, or
train.feature_store_max_gb; the free memory for `memory`) is not cached, and the experts run on every batch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from mmcompress.console import console, progress
from mmcompress.data.loading import pixel_batches, worker_count
from mmcompress.errors import ConfigError
from mmcompress.model.multimodal import encode_expert
from mmcompress.versioning import module_path, source_digest
from mmcompress.vision.expert import ENCODE_BATCH, VisionExpert
from mmcompress.vision.signals import ExpertTokens, SignalSpec

MODES = ("disk", "memory", "off")  # train.cache_features
GB = 1024**3
ENCODER_CODE = ("vision/expert.py", "vision/grid.py", "model/multimodal.py::encode_expert")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"train.cache_features={mode!r}; choose one of {', '.join(MODES)}")


def expert_key(expert: VisionExpert) -> str:
    """A digest of what the expert's grid features depend on, besides the images."""
    weights = hashlib.sha1()
    for name, tensor in expert.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    content = {
        "described": {k: v for k, v in expert.describe().items() if k != "source"},
        "spec": {k: v for k, v in expert.spec.items() if k != "frozen"},
        "weights": weights.hexdigest(),
        "code": source_digest(*ENCODER_CODE, module_path(type(expert))),
        "libraries": [torch.__version__, transformers.__version__],
    }
    return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def images_key(paths: Sequence[str], memo: Path | None = None) -> str:
    """A digest of the images' bytes, in order (the same files under another path share it). With a `memo`
    folder, it is computed once and found again by the files' paths, sizes and modification times."""
    listing = hashlib.sha1()
    if memo is not None:
        for path in paths:
            stat = os.stat(path)
            listing.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        known = memo / f"{listing.hexdigest()}.key"
        if known.is_file():
            return known.read_text()
    digest = hashlib.sha1()
    for path in paths:
        digest.update(hashlib.sha1(Path(path).read_bytes()).digest())
    key = digest.hexdigest()[:16]
    if memo is not None:
        memo.mkdir(parents=True, exist_ok=True)
        tmp = known.with_name(f".{known.name}.{os.getpid()}.tmp")
        tmp.write_text(key)
        os.replace(tmp, known)
    return key


class StoreTooLarge(Exception):
    """The features of a split would not fit where they would be kept: the caller runs without them."""


def estimated_bytes(experts: dict[str, VisionExpert], images: int, signals: SignalSpec | None) -> int:
    """fp32 grid tokens of every expert for `images` images and, with signals, their importance and keys
    (the attending layer's width for [CLS] attention, the tokens' own otherwise)."""
    total = 0
    for expert in experts.values():
        tokens = expert.grid[0] * expert.grid[1]
        per_image = tokens * expert.channels
        if signals is not None:
            cls = signals.kind_for(expert) == "cls"
            per_image += tokens * (1 + (expert.native_channels if cls else expert.channels))
        total += 4 * images * per_image
    return total


def available_memory() -> int:
    """Bytes the kernel can hand out without swapping (page cache included), as `free` reports them."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
        return (
            int(next(line for line in meminfo.splitlines() if line.startswith("MemAvailable:")).split()[1])
            * 1024
        )
    except (OSError, StopIteration):  # not Linux: free pages only, where the system tells them
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 1 << 62  # unknown: assume there is room


def room_for(needed: int, store: Path | None, max_gb: float | None) -> str | None:
    """Why `needed` bytes cannot be kept in the disk `store` (or, without one, in memory); None if they can."""
    if store is None:
        free, where = available_memory(), "the available memory"
    else:
        existing = next(p for p in (store, *store.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        where = f"the free disk at {existing}"
        if max_gb is not None and needed > max_gb * GB:
            return f"{_gb(needed)} of features exceed train.feature_store_max_gb={max_gb:g}"
    if needed > 0.9 * free:
        return f"{_gb(needed)} of features exceed {where} ({_gb(free)})"
    return None


def signals_key(expert: VisionExpert, spec: SignalSpec) -> str:
    """A digest of which signals are stored: the importance kind, the attention form and their code."""
    code = source_digest("vision/signals.py", "model/multimodal.py::encode_expert", module_path(type(expert)))
    content = [spec.kind_for(expert), spec.attention, code]
    return hashlib.sha1(json.dumps(content).encode()).hexdigest()[:10]


def split_features(
    experts: dict[str, VisionExpert],
    paths: Sequence[str],
    cfg: DictConfig,
    device: torch.device,
    label: str,
    signals: SignalSpec | None = None,
) -> dict[str, ExpertTokens] | None:
    """Every image's grid features (and pruning `signals`) as `train.cache_features` says: from/to the
    disk store, encoded in memory only, or None (`off`: experts run on pixels every batch)."""
    mode = cfg.train.cache_features
    check_mode(mode)
    if mode == "off":
        return None
    store = Path(cfg.paths.cache).expanduser() / "features" if mode == "disk" else None
    try:
        features = encode_images(
            experts,
            paths,
            device,
            store,
            label,
            signals,
            max_gb=cfg.train.feature_store_max_gb,
            workers=worker_count(cfg.train.num_workers),
        )
    except StoreTooLarge as exc:
        console.print(
            f"{label}: {exc}; not cached, the experts run on every batch (train.cache_features=off)"
        )
        return None
    return {name: f.to(device) for name, f in features.items()}


def encode_images(
    experts: dict[str, VisionExpert],
    paths: Sequence[str],
    device: torch.device,
    store: Path | None,
    label: str,
    signals: SignalSpec | None = None,
    max_gb: float | None = None,
    workers: int = 0,
) -> dict[str, ExpertTokens]:
    """{expert: (n_images, N, C) tokens and signals} of `paths`, read from `store` where present, else
    encoded (all missing experts in one pass over the images) and written there for the next run.

    Raises StoreTooLarge, before encoding, when what is missing would not fit in the store (or in memory)."""
    found: dict[str, ExpertTokens] = {}
    files: dict[str, tuple[Path, Path | None]] = {}
    if store is not None:
        key = images_key(paths, memo=store / "images")
        for name, expert in experts.items():
            folder = store / expert_key(expert)
            extra = folder / f"{key}.signals-{signals_key(expert, signals)}.safetensors" if signals else None
            files[name] = (folder / f"{key}.safetensors", extra)
        for name, (main, extra) in files.items():
            if main.is_file() and (extra is None or extra.is_file()):
                stored = load_file(main) | (load_file(extra) if extra else {})
                found[name] = ExpertTokens(stored["features"], stored.get("importance"), stored.get("keys"))
    missing = {name: e for name, e in experts.items() if name not in found}
    if not missing:
        return found
    problem = room_for(estimated_bytes(missing, len(paths), signals), store, max_gb)
    if problem is not None:
        raise StoreTooLarge(problem)
    encoded = _encode(missing, paths, device, label, signals, workers)
    for name, tokens in encoded.items():
        if name in files:
            main, extra = files[name]
            _atomic_save(main, {"features": tokens.tokens})
            if extra is not None:
                _atomic_save(extra, {"importance": tokens.importance, "keys": tokens.keys})
    return found | encoded


@torch.no_grad()
def _encode(experts, paths, device, label, signals, workers) -> dict[str, ExpertTokens]:
    """Every image through every expert, ENCODE_BATCH at a time, decoded by `workers` processes ahead."""
    chunks: dict[str, list[ExpertTokens]] = {name: [] for name in experts}
    batches = [range(lo, min(lo + ENCODE_BATCH, len(paths))) for lo in range(0, len(paths), ENCODE_BATCH)]
    preprocess = {name: expert.preprocess for name, expert in experts.items()}
    with progress() as bar:
        task = bar.add_task(f"encode {label}", total=len(paths), info=", ".join(experts))
        for pixels in pixel_batches(paths, batches, preprocess, workers, device):
            for name, expert in experts.items():
                was_training = expert.training
                chunks[name].append(encode_expert(expert.eval(), pixels[name], signals).to("cpu"))
                expert.train(was_training)
            bar.update(task, advance=len(next(iter(pixels.values()))))
    return {name: ExpertTokens.cat(parts) for name, parts in chunks.items()}  # (n, N, C) tokens each


def _gb(size: int) -> str:
    return f"{size / GB:,.1f} GB" if size >= GB / 10 else f"{size / 1024**2:,.2f} MB"


def _atomic_save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write under a lock and a temporary name, so parallel runs of a sweep never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
