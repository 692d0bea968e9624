"""Where mini experts live: directories named by a hash of the recipe (architecture, objective, schedule,
world and the code that builds them). The default recipes' experts ship inside the package
(`mmcompress/weights/`, a few MB each, rebuilt with `mmcompress pretrain-expert NAME --ship`); any other
recipe is pretrained once per machine into ${paths.cache}/experts, one builder at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mmcompress.console import console
from mmcompress.data.world import world_spec
from mmcompress.errors import UserError
from mmcompress.hub.resolve import resolve
from mmcompress.training.mini_experts.pretrain import pretrain_expert
from mmcompress.versioning import PACKAGE, module_path, source_digest
from mmcompress.vision.families import EXPERTS

SHIPPED_WEIGHTS = PACKAGE / "weights"
PRETRAINING_CODE = (
    "training/mini_experts/pretrain.py",
    "training/mini_experts/objectives.py",
    "training/mini_experts/scenes.py",
    "training/schedules.py",
    "vision/expert.py",
    "vision/grid.py",
)


def expert_sources(cfg: DictConfig) -> dict[str, str]:
    """Where each configured expert's weights come from: its checkpoint (a directory, a hub id, or the
    registry's stand-in for one the hub cannot provide here), or, for `checkpoint: mini`, the mini expert
    of its recipe (pretrained now if this machine has none)."""
    sources = {}
    for name, expert in cfg.encoder.experts.items():
        if expert.checkpoint != "mini":
            sources[name] = resolve(str(expert.checkpoint), Path(cfg.paths.cache))
        elif expert.get("mini") is None:
            raise UserError(f"encoder expert '{name}' asks for checkpoint=mini but has no `mini` recipe")
        else:
            sources[name] = str(ensure_mini_expert(expert, cfg))
    return sources


def mini_expert_dir(expert: DictConfig, cfg: DictConfig) -> Path:
    """Where the mini expert of this recipe lives (built there on first use)."""
    code = [*PRETRAINING_CODE, module_path(EXPERTS[expert.family])]
    if "contrastive" in expert.mini.objective:
        code.append("model/llm.py")  # the text tower's word tokenizer
    recipe = {
        "family": expert.family,
        "mini": OmegaConf.to_container(expert.mini, resolve=True),
        "select_layer": expert.get("select_layer"),
        "schedule": OmegaConf.to_container(cfg.pretrain, resolve=True),
        "world": world_spec(cfg).cache_key(),
        "code": source_digest(*code),
    }
    key = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.paths.cache).expanduser() / "experts" / f"{expert.family}-mini-{key}"


def ensure_mini_expert(expert: DictConfig, cfg: DictConfig, *, rebuild: bool = False) -> Path:
    """Return the mini expert's directory: shipped, cached, or pretrained now and cached."""
    out = mini_expert_dir(expert, cfg)
    shipped = SHIPPED_WEIGHTS / out.name
    if (shipped / "pretrain_metrics.json").is_file() and not rebuild:
        return shipped
    done = out / "pretrain_metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:  # one builder at a time (parallel sweeps)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and not rebuild:
            return out
        console.print(f"[bold]Pretraining the mini {expert.family} expert[/] (once per machine) → {out}")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with torch.random.fork_rng():  # a fresh build and a cached one leave the caller's RNG alike
            pretrain_expert(expert, cfg, tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


def ship(directory: Path) -> Path:
    """Copy a built mini expert into the package, so every install starts with it (developers only)."""
    target = SHIPPED_WEIGHTS / directory.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(directory, target)
    return target
