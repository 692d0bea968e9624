"""Mid-stage resume: the full trainer state, saved atomically every `train.checkpoint_every` steps.

    checkpoints/<stage>.resume/step-00000120/  state.safetensors  trainer.json

`state.safetensors` holds the trainable weights, the optimizer's tensors and the RNG states; `trainer.json`
everything else (step, scheduler, optimizer hyper-parameters, Python's RNG, the logging window). Nothing is
pickled. A checkpoint directory is written under a temporary name and renamed whole, so a `kill -9` leaves
either the previous checkpoint or the new one; the newest complete one is resumed from.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from mmcompress.errors import UserError
from mmcompress.rundir import atomic_write

STATE_FILE = "state.safetensors"
TRAINER_FILE = "trainer.json"
# Full (unsharded) tensors of the trainable parameters only; frozen weights are rebuilt from the run.
GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
SCATTER = StateDictOptions(full_state_dict=True, strict=False)


@dataclass
class Resumed:
    """What the training loop needs besides the restored model, optimizer and scheduler."""

    step: int
    window: list[float] = field(default_factory=list)  # losses since the last logged record


def resume_dir(checkpoints: Path, stage: str) -> Path:
    return checkpoints / f"{stage}.resume"


def save(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    state: Resumed,
    trainable: set[str],
    write: bool = True,
) -> None:
    """Gather the trainer state (a collective: every process calls it) and, where `write`, store it.
    `trainable` names each trainable parameter once (a tied embedding also appears as the LM head)."""
    weights = get_model_state_dict(model, options=GATHER)
    optim = get_optimizer_state_dict(model, optimizer, options=GATHER)
    if not write:
        return
    tensors = {f"model/{name}": value for name, value in weights.items() if name in trainable}
    scalars: dict[str, dict] = {}
    for name, values in optim["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim/{name}/{key}"] = value
            else:
                scalars.setdefault(name, {})[key] = value
    numpy_rng = np.random.get_state()
    tensors["rng/torch"] = torch.get_rng_state()
    tensors["rng/numpy"] = torch.from_numpy(numpy_rng[1].astype(np.int64))
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()  # this process's device
    python_rng = random.getstate()
    trainer = {
        "step": state.step,
        "window": state.window,
        "scheduler": schedule.state_dict(),
        "optimizer": {"param_groups": optim["param_groups"], "scalars": scalars},
        "rng": {"numpy": list(numpy_rng[2:]), "python": [python_rng[0], list(python_rng[1]), python_rng[2]]},
    }
    final = directory / f"step-{state.step:08d}"
    tmp = directory / f".tmp-step-{state.step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / STATE_FILE)
    (tmp / TRAINER_FILE).write_text(json.dumps(trainer))
    for file in (tmp / STATE_FILE, tmp / TRAINER_FILE):
        with file.open("rb") as f:
            os.fsync(f.fileno())
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for older in directory.iterdir():  # only after the new one is complete
        if older != final:
            shutil.rmtree(older, ignore_errors=True)


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("step-"))


def latest(directory: Path) -> Path | None:
    """The newest complete checkpoint under `directory` (temporary ones are unfinished writes)."""
    found = sorted(directory.glob("step-*")) if directory.is_dir() else []
    return found[-1] if found else None


def load(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    trainable: set[str],
) -> Resumed | None:
    """Restore the newest checkpoint into the (wrapped) model, optimizer, scheduler and RNGs."""
    path = latest(directory)
    if path is None:
        return None
    tensors = load_file(path / STATE_FILE)
    trainer = json.loads((path / TRAINER_FILE).read_text())
    weights = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    if set(weights) != trainable:
        raise UserError(
            f"{path} holds other trainable parameters than this stage trains (e.g. "
            f"{sorted(set(weights) ^ trainable)[0]}); delete {directory} to restart the stage"
        )
    set_model_state_dict(model, weights, options=SCATTER)
    state: dict[str, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            name, slot = key.removeprefix("optim/").rsplit("/", 1)
            state.setdefault(name, {})[slot] = value
    for name, values in trainer["optimizer"]["scalars"].items():
        state.setdefault(name, {}).update(values)
    groups = trainer["optimizer"]["param_groups"]
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=SCATTER)
    schedule.load_state_dict(trainer["scheduler"])
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    pos, has_gauss, gauss = trainer["rng"]["numpy"]
    np.random.set_state(("MT19937", tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = trainer["rng"]["python"]
    random.setstate((version, tuple(internal), gauss_next))
    return Resumed(step=trainer["step"], window=trainer["window"])


def rewind_metrics(metrics: Path, stage: str, step: int) -> None:
    """Drop the records a killed process logged after the checkpoint it resumes from (and a line the kill
    cut short), so the resumed run's log reads as if it had never stopped."""
    if not metrics.is_file():
        return
    lines = metrics.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if line.endswith("\n") and not (record.get("stage") == stage and record.get("step", 0) > step):
            kept.append(line)
    if kept != lines:
        atomic_write(metrics, "".join(kept))
