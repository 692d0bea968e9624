"""Model building: a fresh model for a new run, or a run's model rebuilt from its checkpoints.

Every part comes from its registry, keyed by the option names of its conf/ group: the expert families
(`encoder.experts.*.family`), the fusion, the pruning method, the projector and the LLM (`llm.name`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch import nn

from mmcompress.data.llava import Split
from mmcompress.errors import ConfigError, UserError
from mmcompress.hub.resolve import resolve
from mmcompress.model.checkpoints import (
    CHECKPOINT_FIX,
    MODULES_FILE,
    check_state,
    checkpoint_chain,
    from_checkpoint,
    save_parts,
    trainable_modules,
)
from mmcompress.model.fusion import FUSIONS
from mmcompress.model.llm import LLMS, load_llm
from mmcompress.model.multimodal import MultimodalLM
from mmcompress.model.projector import PROJECTORS
from mmcompress.pruning.methods import PRUNERS
from mmcompress.rundir import RunDir
from mmcompress.vision.expert import VisionExpert
from mmcompress.vision.families import EXPERTS
from mmcompress.vision.signals import SignalSpec, check_native

EXPERT_SOURCE_KEYS = ("family", "checkpoint", "mini")  # where an expert comes from, not how it is used


def resolve_device(name: str) -> torch.device:
    """The `device` setting as a torch device (`auto`: CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    return torch.device(name)


def load_experts(
    cfg: DictConfig, source_of: Callable[[str, DictConfig], str | Path]
) -> dict[str, VisionExpert]:
    """Every configured expert, loaded from `source_of(name, expert_cfg)` and placed on the common grid
    (a `Path` source is a run's checkpoint: a failure to load it is an error naming it)."""
    experts = {}
    for name, expert in cfg.encoder.experts.items():
        spec = {
            k: v
            for k, v in OmegaConf.to_container(expert, resolve=True).items()
            if k not in EXPERT_SOURCE_KEYS
        }
        source = source_of(name, expert)
        checkpoint = source if isinstance(source, Path) else None  # a run's own checkpoint
        experts[name] = from_checkpoint(
            checkpoint, EXPERTS[expert.family].from_pretrained, name, str(source), spec
        )
    grid = tuple(cfg.grid) if cfg.get("grid") else next(iter(experts.values())).native_grid
    if len(grid) != 2 or min(grid) <= 0:
        raise ConfigError(f"grid={list(grid)}: give [rows, cols] of the common token grid, e.g. grid=[8,8]")
    for expert in experts.values():
        expert.place_on_grid(grid)
    return experts


def assemble(cfg: DictConfig, experts: dict[str, VisionExpert], llm, tokenizer) -> MultimodalLM:
    """The multimodal model around loaded experts and LLM: fusion, pruning and fresh projectors."""
    frequencies = int(cfg.projector.get("positions") or 0)
    position_at = str(cfg.projector.get("position_at") or "input")
    width = llm.config.get_text_config().hidden_size
    if 4 * frequencies > width:  # its type and position_at were checked with the rest of the config
        raise ConfigError(
            f"projector.positions={frequencies}: give at most {width // 4} (4 values per octave in the LLM's "
            f"{width} dimensions)"
        )
    appended = 4 * frequencies if position_at == "input" else 0
    channels = {name: e.channels + appended for name, e in experts.items()}  # + each cell's sin/cos
    fusion = FUSIONS[cfg.fusion.name](channels, next(iter(experts.values())).grid, cfg.fusion)
    pruner = PRUNERS[cfg.pruning.name](cfg.pruning)
    signals = SignalSpec.from_config(cfg.pruning) if pruner.needs else None
    if cfg.pruning.name != "none":
        for expert in experts.values():
            check_native(expert)
            if signals is not None:
                signals.kind_for(expert)  # a signal the expert cannot give fails here, before any work

    def projector(in_channels: int) -> nn.Module:
        with torch.random.fork_rng():  # every projector starts alike for a seed, whatever was built before
            torch.manual_seed(cfg.seed)
            return PROJECTORS[cfg.projector.name](in_channels, width, cfg.projector.depth)

    prealign = {name: projector(c) for name, c in channels.items()}
    head = projector(fusion.out_channels)
    return MultimodalLM(
        experts, fusion, pruner, head, prealign, llm, tokenizer, signals, frequencies, position_at
    )


def build_model(cfg: DictConfig, train: Split, run: RunDir, sources: Mapping[str, str]) -> MultimodalLM:
    """A fresh model for a new run, its experts from `sources` (name → hub id or directory); writes
    checkpoints/init so the run can always be reloaded."""
    experts = load_experts(cfg, lambda name, expert: sources[name])
    language = LLMS[cfg.llm.name]
    texts = [m["content"] for s in train.samples for m in s.messages]
    llm, tokenizer = language.build(cfg.llm, texts, cfg.seed, Path(cfg.paths.cache))
    model = assemble(cfg, experts, llm, tokenizer)
    minis = [n for n, e in cfg.encoder.experts.items() if e.checkpoint == "mini"]
    save_parts(model, run.checkpoint("init"), ["llm"] if language.built_in_run else [], minis)
    return model


def load_model(cfg: DictConfig, run: RunDir, until: str | None = None) -> MultimodalLM:
    """Rebuild a run's model from its checkpoint chain: init, then every completed stage (up to `until`).

    A checkpoint that does not fit the model this config builds (another architecture or code version, or
    a damaged file) is a one-line error naming the file, never a `load_state_dict` traceback."""
    chain = checkpoint_chain(cfg, run, until)

    def latest(part: str) -> Path | None:
        found = [stage / part for stage in chain if (stage / part).exists()]
        return found[-1] if found else None

    def source_of(name: str, expert: DictConfig) -> str | Path:
        saved = latest(f"experts/{name}")
        if saved is not None:
            return saved
        if expert.checkpoint == "mini":
            raise UserError(f"{chain[0]} holds no copy of the mini expert '{name}'; {CHECKPOINT_FIX}")
        return resolve(str(expert.checkpoint), Path(cfg.paths.cache))

    experts = load_experts(cfg, source_of)
    llm, tokenizer = _load_llm(cfg, latest("llm"), chain[0])
    model = assemble(cfg, experts, llm, tokenizer)
    modules_file = latest(MODULES_FILE)
    modules = trainable_modules(model)
    state = from_checkpoint(modules_file, load_file, modules_file)
    check_state(modules.state_dict(), state, modules_file)
    modules.load_state_dict(state)
    return model


def _load_llm(cfg: DictConfig, saved: Path | None, init: Path):
    """The run's own LLM where a stage saved one (checked against the config), else the configured one."""
    language = LLMS[cfg.llm.name]
    if saved is not None:
        llm, tokenizer = from_checkpoint(saved, load_llm, saved)
        problem = language.mismatch(cfg.llm, llm)
        if problem:
            raise UserError(f"checkpoint {saved} {problem}; {CHECKPOINT_FIX}")
        return llm, tokenizer
    if language.built_in_run:
        raise UserError(f"{init} holds no copy of the run's {cfg.llm.name} LLM; {CHECKPOINT_FIX}")
    return language.build(cfg.llm, [], cfg.seed, Path(cfg.paths.cache))
