"""Model assembly: build a fresh model for a new run, or load one from a run's checkpoints.

A run's `checkpoints/init/` keeps whatever exists only in that run (the tiny LLM and its tokenizer built
from the data, mini experts, the initial projector), so every stage can be reloaded from the run alone.
Each later stage directory holds the parts that stage trained; loading applies them in stage order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from torch import nn

from mmcompress.data.llava import Split
from mmcompress.encoders import EXPERTS, VisionExpert
from mmcompress.errors import UserError
from mmcompress.fusion import FUSIONS
from mmcompress.llm import build_tiny_llm, build_word_tokenizer, load_llm
from mmcompress.model import MultimodalLM
from mmcompress.pretrain import ensure_mini_expert
from mmcompress.projector import PROJECTORS
from mmcompress.pruning import PRUNERS
from mmcompress.rundir import RunDir

STAGE_ORDER = ("init", "prealign", "align", "finetune")
MODULES_FILE = "modules.safetensors"


def _expert_source(name: str, expert: DictConfig, cfg: DictConfig) -> str:
    if expert.checkpoint == "mini":
        if expert.get("mini") is None:
            raise UserError(f"encoder expert '{name}' asks for checkpoint=mini but has no `mini` recipe")
        return str(ensure_mini_expert(expert, cfg))
    return str(expert.checkpoint)


def _assemble(cfg: DictConfig, experts: dict[str, VisionExpert], llm, tokenizer) -> MultimodalLM:
    fusion = FUSIONS[cfg.fusion.name](channels={n: e.channels for n, e in experts.items()}, cfg=cfg.fusion)
    pruner = PRUNERS[cfg.pruning.name](cfg=cfg.pruning)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        projector = PROJECTORS[cfg.projector.name](
            fusion.out_channels, llm.config.get_text_config().hidden_size, cfg.projector.depth
        )
    return MultimodalLM(experts, fusion, pruner, projector, llm, tokenizer)


def _trainable_modules(model: MultimodalLM) -> nn.ModuleDict:
    """The non-HF modules saved as one safetensors file per stage."""
    return nn.ModuleDict({"fusion": model.fusion, "projector": model.projector, "pruner": model.pruner})


def build_model(cfg: DictConfig, train: Split, run: RunDir) -> MultimodalLM:
    """A fresh model for a new run; writes checkpoints/init so the run can always be reloaded."""
    init = run.checkpoint("init")
    experts = {}
    for name, expert in cfg.encoder.experts.items():
        source = _expert_source(name, expert, cfg)
        experts[name] = EXPERTS[expert.family].from_pretrained(name, source, select_layer=expert.select_layer)
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


def load_model(cfg: DictConfig, run: RunDir) -> MultimodalLM:
    """Rebuild a run's model from its own checkpoints: init, then every completed stage in order."""
    stages = [s for s in STAGE_ORDER if s == "init" or run.stage_complete(s)]
    if not (run.checkpoint("init") / MODULES_FILE).is_file():
        raise UserError(f"{run.path} has no checkpoints/init; run `mmcompress train` for it first")

    def latest(part: str) -> Path | None:
        found = [run.checkpoint(s) / part for s in stages if (run.checkpoint(s) / part).exists()]
        return found[-1] if found else None

    experts = {}
    for name, expert in cfg.encoder.experts.items():
        source = latest(f"experts/{name}") or _expert_source(name, expert, cfg)
        experts[name] = EXPERTS[expert.family].from_pretrained(
            name, str(source), select_layer=expert.select_layer
        )
    llm_dir = latest("llm")
    if llm_dir is not None:
        llm, tokenizer = load_llm(llm_dir)
    else:
        llm, tokenizer = load_llm(
            cfg.llm.path, trust_remote_code=cfg.llm.trust_remote_code, chat_template=cfg.llm.chat_template
        )
    model = _assemble(cfg, experts, llm, tokenizer)
    _trainable_modules(model).load_state_dict(load_file(latest(MODULES_FILE)))
    return model
