"""Pretraining a mini expert in the synthetic world: the family's own mini architecture, trained through the
same `VisionExpert` wrapper the MLLM uses (its own preprocessing and feature selection) on its family's
objective, probed on held-out images, and saved with `save_pretrained`, so it loads through the same
`from_pretrained` path as a real checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from mmcompress.console import console, progress
from mmcompress.data.world import world_dir, world_spec
from mmcompress.errors import ConfigError
from mmcompress.training.mini_experts.objectives import OBJECTIVES
from mmcompress.training.mini_experts.scenes import WorldScenes
from mmcompress.training.schedules import scheduler
from mmcompress.vision.expert import ENCODE_BATCH, VisionExpert
from mmcompress.vision.families import EXPERTS


def pretrain_expert(expert_cfg: DictConfig, cfg: DictConfig, out: Path) -> dict:
    """Pretrain a mini expert of `expert_cfg.family` on the world's train split and save it to `out`."""
    family, mini = expert_cfg.family, expert_cfg.mini
    family_class = EXPERTS[family]
    objectives = family_class.mini_objectives
    if mini.objective not in objectives:
        raise ConfigError(
            f"{family} mini.objective={mini.objective!r}; choose one of {', '.join(objectives)}"
            if objectives
            else f"the {family} family has no mini expert; give it a checkpoint instead of `mini`"
        )
    start = time.time()
    torch.manual_seed(cfg.world.seed)
    root, spec = world_dir(cfg), world_spec(cfg)
    model, processor = family_class.mini_model(mini)
    expert_spec = {k: v for k, v in OmegaConf.to_container(expert_cfg, resolve=True).items() if k != "mini"}
    expert = family_class(f"mini-{family}", "pretraining", model, processor, expert_spec)
    train, val = WorldScenes(root, "train"), WorldScenes(root, "val")
    objective = OBJECTIVES[mini.objective](expert, train)
    train_inputs = _preprocess(expert, train)  # (n, ...) half precision: the whole split stays in memory
    params = [*expert.parameters(), *objective.parameters()]
    steps, batch = cfg.pretrain.steps, cfg.pretrain.batch_size
    optimizer = torch.optim.AdamW(params, lr=cfg.pretrain.lr, weight_decay=0.01)
    schedule = scheduler(optimizer, "cosine", steps, warmup_ratio=0.05)
    with progress() as bar:
        task = bar.add_task(f"pretrain {family} ({mini.objective})", total=steps, info="")
        for _ in range(steps):
            idx = torch.randint(len(train), (batch,))
            loss = objective.loss(train_inputs[idx].float(), idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            bar.update(task, advance=1, info=f"loss {loss.item():.3f}")

    val_objective = OBJECTIVES[mini.objective](expert, val, heads_from=objective)
    metrics = {
        "family": family,
        "objective": mini.objective,
        "steps": steps,
        "batch_size": batch,
        "train_images": len(train),
        "input_size": list(expert.input_size),
        "native_grid": list(expert.native_grid),
        **val_objective.probe(_preprocess(expert, val)),
        "wall_time_s": round(time.time() - start, 1),
        "world": asdict(spec),
    }
    out.mkdir(parents=True, exist_ok=True)
    expert.save_pretrained(out)
    (out / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=2))
    console.print(
        f"mini {family} expert: "
        + ", ".join(
            f"{group} {k} {v:.3f}"
            for group in ("patch_accuracy", "image_accuracy")
            for k, v in metrics.get(group, {}).items()
            if v is not None
        )
        + f" ({metrics['wall_time_s']} s)"
    )
    return metrics


def _preprocess(expert: VisionExpert, scenes: WorldScenes) -> torch.Tensor:
    """Every image of the split through the expert's own preprocessing, in half precision."""
    parts = []
    for lo in range(0, len(scenes), ENCODE_BATCH):
        images = [Image.open(p).convert("RGB") for p in scenes.paths[lo : lo + ENCODE_BATCH]]
        parts.append(expert.preprocess(images).half())
    return torch.cat(parts)
