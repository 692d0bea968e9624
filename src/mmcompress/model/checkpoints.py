"""A run's checkpoints: what each stage writes, the chain a model is rebuilt from, and one-line errors
for a checkpoint that does not fit.

A run's `checkpoints/init/` keeps whatever exists only in that run (the tiny LLM and its tokenizer built
from the data, mini experts, the initial projector), so every stage can be reloaded from the run alone.
Each later stage directory holds the parts that stage trained; loading applies them in stage order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from mmcompress.errors import ConfigError, UserError
from mmcompress.rundir import RunDir

CHECKPOINT_ORDER = ("init", "prealign", "align", "finetune")  # the order stage checkpoints apply in
MODULES_FILE = "modules.safetensors"
ARCHITECTURE_KEYS = ("encoder", "fusion", "projector", "llm", "grid")  # what init_from must share
CHECKPOINT_FIX = (
    "it was made with another architecture or code version (or is damaged); start a new run (run_dir=...) "
    "or pass the same overrides as the run that made it (its overrides.txt)"
)


def trainable_modules(model: nn.Module) -> nn.ModuleDict:
    """The non-HF modules saved as one safetensors file per stage."""
    return nn.ModuleDict(
        {
            "fusion": model.fusion,
            "projector": model.projector,
            "prealign_projectors": model.prealign_projectors,
            "pruner": model.pruner,
        }
    )


def save_parts(model: nn.Module, directory: Path, trained: list[str], mini_experts: list[str] = ()) -> None:
    """Write the parts a stage changed: modules always, the LLM and experts when trained."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in trainable_modules(model).state_dict().items()}
    save_file(state, directory / MODULES_FILE)
    if "llm" in trained:
        model.llm.save_pretrained(directory / "llm")
        model.tokenizer.save_pretrained(directory / "llm")
    for name, expert in model.experts.items():
        if "encoder" in trained or name in mini_experts:
            expert.save_pretrained(directory / "experts" / name)


def checkpoint_chain(cfg: DictConfig, run: RunDir, until: str | None = None) -> list[Path]:
    """The checkpoint directories a run's model is rebuilt from, in the order they apply.

    A run's own completed stages (up to `until`, e.g. the align stage the A score reads); with
    `init_from`, first the stages that run completed before this run's first training stage (all of them
    for an eval-only run), so a pruning setting can be evaluated — or a later stage retrained — on a
    model trained once."""
    chain = []
    if cfg.get("init_from"):
        source = RunDir(Path(cfg.init_from).expanduser())
        training = [s for s in CHECKPOINT_ORDER[1:] if s in cfg.stages]
        before = CHECKPOINT_ORDER[: CHECKPOINT_ORDER.index(training[0])] if training else CHECKPOINT_ORDER
        chain += [source.checkpoint(s) for s in before if s == "init" or source.stage_complete(s)]
    else:
        chain.append(run.checkpoint("init"))
    own = CHECKPOINT_ORDER[1:] if until is None else CHECKPOINT_ORDER[1 : CHECKPOINT_ORDER.index(until) + 1]
    chain += [run.checkpoint(s) for s in own if run.stage_complete(s)]
    if not (chain[0] / MODULES_FILE).is_file():
        raise UserError(
            f"{chain[0].parent.parent} has no checkpoints/init; run `mmcompress train` for it first"
        )
    return chain


def check_init_from(cfg: DictConfig) -> None:
    """`init_from` must be a run of the same architecture (pruning, data budget and stages may differ)."""
    source = RunDir(Path(cfg.init_from).expanduser())
    theirs = source.config() if source.path.is_dir() else None
    if theirs is None:
        raise ConfigError(f"init_from={cfg.init_from} does not exist; give the directory of a finished run")
    for key in ARCHITECTURE_KEYS:
        mine = OmegaConf.to_container(cfg, resolve=True).get(key)
        other = OmegaConf.to_container(theirs, resolve=True).get(key)
        if mine != other:
            raise ConfigError(
                f"init_from={cfg.init_from} is a run with another `{key}` setting; give it the same "
                f"{key} overrides as that run (see its overrides.txt)"
            )


def from_checkpoint(path: Path | None, load, *args):
    """`load(*args)`, with any failure to read a run's checkpoint `path` turned into a one-line error."""
    if path is None:  # not a run's checkpoint: the loader's own errors name their source
        return load(*args)
    try:
        return load(*args)
    except (UserError, RuntimeError, ValueError, OSError, SafetensorError) as exc:
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"checkpoint {path} cannot be loaded ({reason[:200]}); {CHECKPOINT_FIX}") from None


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path) -> None:
    """The modules file must hold exactly the model's tensors, each of the model's shape."""
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    wrong = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    if wrong:
        key = wrong[0]
        detail = f"{key} is {_shape(found[key])} there but {_shape(expected[key])} in this model"
    elif missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
    else:
        return
    raise UserError(f"checkpoint {path} does not fit this run's model ({detail}); {CHECKPOINT_FIX}")


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "a scalar"
