"""Model assembly: build a fresh model for a new run, or load one from a run's checkpoints.

A run's `checkpoints/init/` keeps whatever exists only in that run (the tiny LLM and its tokenizer built
from the data, mini experts, the initial projector), so every stage can be reloaded from the run alone.
Each later stage directory holds the parts that stage trained; loading applies them in stage order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mmcompress.data.llava import Split
from mmcompress.encoders import EXPERTS, VisionExpert
from mmcompress.errors import ConfigError, UserError
from mmcompress.fusion import FUSIONS
from mmcompress.llm import build_tiny_llm, build_word_tokenizer, load_llm
from mmcompress.model import MultimodalLM
from mmcompress.pretrain import ensure_mini_expert
from mmcompress.projector import PROJECTORS
from mmcompress.pruning import PRUNERS
from mmcompress.rundir import RunDir
from mmcompress.signals import SignalSpec, check_native

STAGE_ORDER = ("init", "prealign", "align", "finetune")
MODULES_FILE = "modules.safetensors"
EXPERT_SOURCE_KEYS = ("family", "checkpoint", "mini")  # where an expert comes from, not how it is used


def expert_source(name: str, expert: DictConfig, cfg: DictConfig) -> str:
    if expert.checkpoint == "mini":
        if expert.get("mini") is None:
            raise UserError(f"encoder expert '{name}' asks for checkpoint=mini but has no `mini` recipe")
        return str(ensure_mini_expert(expert, cfg))
    return str(expert.checkpoint)


def load_experts(cfg: DictConfig, source_of) -> dict[str, VisionExpert]:
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
        experts[name] = _from_checkpoint(
            checkpoint, EXPERTS[expert.family].from_pretrained, name, str(source), spec
        )
    grid = tuple(cfg.grid) if cfg.get("grid") else next(iter(experts.values())).native_grid
    if len(grid) != 2 or min(grid) <= 0:
        raise ConfigError(f"grid={list(grid)}: give [rows, cols] of the common token grid, e.g. grid=[8,8]")
    for expert in experts.values():
        expert.place_on_grid(grid)
    return experts


def _assemble(cfg: DictConfig, experts: dict[str, VisionExpert], llm, tokenizer) -> MultimodalLM:
    channels = {name: e.channels for name, e in experts.items()}
    fusion = FUSIONS[cfg.fusion.name](channels, next(iter(experts.values())).grid, cfg.fusion)
    pruner = PRUNERS[cfg.pruning.name](cfg.pruning)
    if cfg.pruning.name != "none":
        for expert in experts.values():
            check_native(expert)
    width = llm.config.get_text_config().hidden_size

    def projector(in_channels: int) -> nn.Module:
        with torch.random.fork_rng():  # every projector starts alike for a seed, whatever was built before
            torch.manual_seed(cfg.seed)
            return PROJECTORS[cfg.projector.name](in_channels, width, cfg.projector.depth)

    prealign = {name: projector(c) for name, c in channels.items()}
    model = MultimodalLM(experts, fusion, pruner, projector(fusion.out_channels), prealign, llm, tokenizer)
    model.signal_spec = SignalSpec.from_config(cfg.pruning) if pruner.needs else None
    return model


def _trainable_modules(model: MultimodalLM) -> nn.ModuleDict:
    """The non-HF modules saved as one safetensors file per stage."""
    return nn.ModuleDict(
        {
            "fusion": model.fusion,
            "projector": model.projector,
            "prealign_projectors": model.prealign_projectors,
            "pruner": model.pruner,
        }
    )


def build_model(cfg: DictConfig, train: Split, run: RunDir) -> MultimodalLM:
    """A fresh model for a new run; writes checkpoints/init so the run can always be reloaded."""
    init = run.checkpoint("init")
    experts = load_experts(cfg, lambda name, expert: expert_source(name, expert, cfg))
    if cfg.llm.name == "tiny":
        texts = [m["content"] for s in train.samples for m in s.messages]
        tokenizer = build_word_tokenizer(texts)
        llm = build_tiny_llm(cfg.llm, tokenizer, cfg.seed)
    else:
        llm, tokenizer = load_llm(
            cfg.llm.path, trust_remote_code=cfg.llm.trust_remote_code, chat_template=cfg.llm.chat_template
        )
    model = _assemble(cfg, experts, llm, tokenizer)
    save_parts(model, init, trained=["llm"] if cfg.llm.name == "tiny" else [], mini_experts=_mini_names(cfg))
    return model


def _mini_names(cfg: DictConfig) -> list[str]:
    return [n for n, e in cfg.encoder.experts.items() if e.checkpoint == "mini"]


def save_parts(
    model: MultimodalLM, directory: Path, trained: list[str], mini_experts: list[str] = ()
) -> None:
    """Write the parts a stage changed: modules always, the LLM and experts when trained."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in _trainable_modules(model).state_dict().items()}
    save_file(state, directory / MODULES_FILE)
    if "llm" in trained:
        model.llm.save_pretrained(directory / "llm")
        model.tokenizer.save_pretrained(directory / "llm")
    for name, expert in model.experts.items():
        if "encoder" in trained or name in mini_experts:
            expert.save_pretrained(directory / "experts" / name)


ARCHITECTURE_KEYS = ("encoder", "fusion", "projector", "llm", "grid")  # what init_from must share


def checkpoint_chain(cfg: DictConfig, run: RunDir, until: str | None = None) -> list[Path]:
    """The checkpoint directories a run's model is rebuilt from, in the order they apply.

    A run's own completed stages (up to `until`, e.g. the align stage the A score reads); with
    `init_from`, first the stages that run completed before this run's first training stage (all of them
    for an eval-only run), so a pruning setting can be evaluated — or a later stage retrained — on a
    model trained once."""
    chain = []
    if cfg.get("init_from"):
        source = RunDir(Path(cfg.init_from).expanduser())
        training = [s for s in STAGE_ORDER[1:] if s in cfg.stages]
        before = STAGE_ORDER[: STAGE_ORDER.index(training[0])] if training else STAGE_ORDER
        chain += [source.checkpoint(s) for s in before if s == "init" or source.stage_complete(s)]
    else:
        chain.append(run.checkpoint("init"))
    own = STAGE_ORDER[1:] if until is None else STAGE_ORDER[1 : STAGE_ORDER.index(until) + 1]
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


def load_model(cfg: DictConfig, run: RunDir, until: str | None = None) -> MultimodalLM:
    """Rebuild a run's model from its checkpoint chain: init, then every completed stage (up to `until`).

    A checkpoint that does not fit the model this config builds (another architecture or code version, or
    a damaged file) is a one-line error naming the file, never a `load_state_dict` traceback."""
    chain = checkpoint_chain(cfg, run, until)

    def latest(part: str) -> Path | None:
        found = [stage / part for stage in chain if (stage / part).exists()]
        return found[-1] if found else None

    experts = load_experts(
        cfg, lambda name, expert: latest(f"experts/{name}") or expert_source(name, expert, cfg)
    )
    llm_dir = latest("llm")
    if llm_dir is not None:
        llm, tokenizer = _from_checkpoint(llm_dir, load_llm, llm_dir)
        _check_tiny_llm(cfg, llm, llm_dir)
    else:
        llm, tokenizer = load_llm(
            cfg.llm.path, trust_remote_code=cfg.llm.trust_remote_code, chat_template=cfg.llm.chat_template
        )
    model = _assemble(cfg, experts, llm, tokenizer)
    modules_file = latest(MODULES_FILE)
    modules = _trainable_modules(model)
    state = _from_checkpoint(modules_file, load_file, modules_file)
    _check_state(modules.state_dict(), state, modules_file)
    modules.load_state_dict(state)
    return model


CHECKPOINT_FIX = (
    "it was made with another architecture or code version (or is damaged); start a new run (run_dir=...) "
    "or pass the same overrides as the run that made it (its overrides.txt)"
)


def _from_checkpoint(path: Path | None, load, *args):
    """`load(*args)`, with any failure to read a run's checkpoint `path` turned into a one-line error."""
    if path is None:  # not a run's checkpoint: the loader's own errors name their source
        return load(*args)
    try:
        return load(*args)
    except (UserError, RuntimeError, ValueError, OSError, SafetensorError) as exc:
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"checkpoint {path} cannot be loaded ({reason[:200]}); {CHECKPOINT_FIX}") from None


def _check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path) -> None:
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


def _check_tiny_llm(cfg: DictConfig, llm, path: Path) -> None:
    """A run's tiny LLM must have the sizes its config asks for (an HF LLM is whatever its path holds)."""
    if cfg.llm.name != "tiny":
        return
    config = llm.config.get_text_config()
    sizes = {
        "hidden_size": config.hidden_size,
        "layers": config.num_hidden_layers,
        "heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
    }
    for key, value in sizes.items():
        if cfg.llm.get(key) is not None and value != cfg.llm[key]:
            raise UserError(
                f"checkpoint {path} holds an LLM with {key} {value}, this run's config has "
                f"llm.{key}={cfg.llm[key]}; {CHECKPOINT_FIX}"
            )


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "a scalar"
