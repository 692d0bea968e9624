"""What each stage trains: the stages in their order, the parameter groups a stage's `trainable` list
names, LoRA on the LLM, and the pre-aligned projector's hand-over to the joint one.

prealign (EAGLE's stage 1: each expert alone through its own projector against the frozen LLM), align
(LLaVA stage 1: the projector) and finetune (LLaVA stage 2: projector and LLM) train what their config's
`trainable` groups say; eval scores the result.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig
from torch import nn

from mmcompress.console import console
from mmcompress.errors import UserError
from mmcompress.model.checkpoints import CHECKPOINT_ORDER
from mmcompress.model.fusion import ChannelConcat
from mmcompress.model.multimodal import MultimodalLM

TRAINING_STAGES = CHECKPOINT_ORDER[1:]  # prealign, align, finetune
ALL_STAGES = (*TRAINING_STAGES, "eval")
PARAMETER_GROUPS = ("encoder", "fusion", "projector", "llm")


def steps_from_epochs(cfg: DictConfig, samples: int) -> None:
    """A stage given in `epochs` runs the optimizer steps that many passes over the `samples` training
    samples take at its batch size, rounded up; its `steps` are set to them (summary.json records them)."""
    for name in TRAINING_STAGES:
        stage = cfg.stage[name]
        if stage.get("epochs") is None or name not in cfg.stages:
            continue
        stage.steps = math.ceil(stage.epochs * samples / stage.batch_size)
        console.print(
            f"stage {name}: {stage.epochs:g} epoch(s) of {samples:,} samples at batch {stage.batch_size} "
            f"= {stage.steps:,} steps"
        )


def parameter_groups(model: MultimodalLM, stage: str) -> dict[str, list[nn.Parameter]]:
    """Parameters by group; in pre-alignment `projector` means the per-expert projectors, and `encoder`
    is always only the experts not marked `frozen`."""
    modules = {
        "encoder": [e for e in model.experts.values() if not e.spec.get("frozen", False)],
        "fusion": [model.fusion],
        "projector": [model.prealign_projectors if stage == "prealign" else model.projector],
        "llm": [model.llm],
    }
    return {name: [p for m in parts for p in m.parameters()] for name, parts in modules.items()}


def set_trainable(model: MultimodalLM, stage: str, groups: list[str], lora: DictConfig) -> list[str]:
    """Freeze all but `groups` (with LoRA, the LLM's adapters instead of its weights); the names of the
    trainable parameters."""
    unknown = set(groups) - set(PARAMETER_GROUPS)
    if unknown:
        raise UserError(
            f"unknown trainable group(s) {sorted(unknown)}; choose from {', '.join(PARAMETER_GROUPS)}"
        )
    model.requires_grad_(False)
    for group, params in parameter_groups(model, stage).items():
        if group in groups:
            for p in params:
                p.requires_grad_(True)
    if "llm" in groups and lora.r > 0:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.targets)
        )
        model.llm = get_peft_model(model.llm, config)  # freezes the base weights
    return [name for name, p in model.named_parameters() if p.requires_grad]


def merge_lora(model: MultimodalLM) -> None:
    """Fold LoRA adapters into the LLM's weights, so checkpoints and evaluation see a plain LLM."""
    from peft import PeftModel

    if isinstance(model.llm, PeftModel):
        model.llm = model.llm.merge_and_unload()


def warm_start_projector(model: MultimodalLM) -> bool:
    """After pre-alignment: with one expert passed through unchanged, the joint projector starts as its
    pre-aligned one."""
    if len(model.experts) != 1 or not isinstance(model.fusion, ChannelConcat):
        return False
    model.projector.load_state_dict(next(iter(model.prealign_projectors.values())).state_dict())
    return True
