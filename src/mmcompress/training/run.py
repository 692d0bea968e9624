"""`mmcompress train`: find (or create) the run directory, skip completed stages, train the rest, evaluate.

Under torchrun this is one process of a data-parallel group; only rank 0 writes the run directory, logs
and evaluates.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from omegaconf import DictConfig

from mmcompress.console import console
from mmcompress.data import splits
from mmcompress.data.llava import Split
from mmcompress.errors import UserError
from mmcompress.evaluation.stage import evaluate
from mmcompress.hub.resolve import provenance
from mmcompress.model.build import build_model, load_model, resolve_device
from mmcompress.model.multimodal import MultimodalLM
from mmcompress.rundir import RunDir, environment, run_id
from mmcompress.tracking import Tracker
from mmcompress.training import distributed
from mmcompress.training.checks import training_precision, validate
from mmcompress.training.mini_experts.cache import expert_sources
from mmcompress.training.stages import TRAINING_STAGES, steps_from_epochs
from mmcompress.training.trainer import Trainer, seed_everything


def run_directory(cfg: DictConfig) -> RunDir:
    return RunDir(Path(cfg.run_dir) if cfg.run_dir else Path(cfg.paths.runs) / cfg.name / run_id(cfg))


def train(cfg: DictConfig, overrides: list[str]) -> RunDir:
    """Run every configured stage that is not complete yet, then evaluate (under torchrun: one process of
    a data-parallel group; only rank 0 writes the run directory, logs and evaluates)."""
    validate(cfg)
    ctx = distributed.setup(cfg, resolve_device(cfg.device))
    console.quiet = not ctx.is_main
    try:
        with contextlib.ExitStack() as held:
            return _train(cfg, overrides, ctx, held)
    finally:
        ctx.close()


def _train(
    cfg: DictConfig, overrides: list[str], ctx: distributed.Context, held: contextlib.ExitStack
) -> RunDir:
    run = run_directory(cfg)
    with ctx.main_first():
        splits.dataset_dir(cfg)  # a missing data path fails here, before a run directory exists
        if ctx.is_main:
            run.create(cfg, overrides)
            held.enter_context(run.lock())  # until this command ends: one trainer per run
            run.update_summary(status="running", error=None, run_id=run.path.name, env=environment())
    start = time.time()
    console.print(f"[bold]run[/] {run.path}")
    tracker = None
    try:
        if ctx.is_main:
            tracker = Tracker(run.path, cfg, f"{cfg.name}/{run.path.name}")
        trained, model = _train_stages(cfg, run, ctx, tracker)
        if not ctx.is_main:
            return run
        if "eval" in cfg.stages:
            evaluate(cfg, run, tracker, model=model, device=ctx.device)
        worked = bool(trained) or "eval" in cfg.stages  # a rerun with nothing to do keeps the recorded time
        run.update_summary(
            status="complete", **({"wall_time_s": round(time.time() - start, 1)} if worked else {})
        )
    except KeyboardInterrupt:
        if ctx.is_main:
            with contextlib.suppress(OSError):  # a full disk must not hide the interruption
                run.update_summary(status="interrupted", wall_time_s=round(time.time() - start, 1))
        raise
    except BaseException as exc:
        if ctx.is_main:
            with contextlib.suppress(OSError):  # a full or read-only disk must not hide the real error
                run.update_summary(
                    status="failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                )
        raise
    finally:
        if tracker is not None:
            tracker.close()
    return run


def _train_stages(
    cfg: DictConfig, run: RunDir, ctx: distributed.Context, tracker: Tracker | None
) -> tuple[list[str], MultimodalLM | None]:
    """The training stages this command runs, run; and the model they leave (None: nothing to do)."""
    seed_everything(cfg.seed)
    todo = _stages_to_run(cfg, run)
    if not todo:
        return todo, None
    with ctx.main_first():  # rank 0 writes checkpoints/init; the others load it
        train_split = splits.load(cfg, "train")
        steps_from_epochs(cfg, len(train_split.samples))
        resumed = run.stage_complete("init") or cfg.get("init_from")
        model = load_model(cfg, run) if resumed else new_model(cfg, train_split, run)
    if ctx.is_main:
        record_architecture(run, model, cfg.fusion.name)
        run.update_summary(precision=training_precision(cfg, ctx.device))  # `auto` resolved on this machine
    sharded = ctx.active and ctx.strategy == "fsdp"  # FSDP keeps the whole model off the GPU
    trainer = Trainer(cfg, model.to("cpu" if sharded else ctx.device), train_split, tracker, ctx.device, ctx)
    for stage in todo:
        trainer.run_stage(stage, run)
    return todo, model


def _stages_to_run(cfg: DictConfig, run: RunDir) -> list[str]:
    """The configured training stages not yet complete, in their canonical order."""
    todo = [s for s in TRAINING_STAGES if s in cfg.stages and not run.stage_complete(s)]
    for done in [s for s in TRAINING_STAGES if s in cfg.stages and s not in todo]:
        console.print(f"stage [bold]{done}[/] is complete; skipped")
    later = (
        [s for s in TRAINING_STAGES[TRAINING_STAGES.index(todo[0]) + 1 :] if run.stage_complete(s)]
        if todo
        else []
    )
    if later:
        raise UserError(
            f"stage {todo[0]} would run after {later[0]}, which {run.path} already completed; "
            "stages run in the order prealign → align → finetune, so start a new run (run_dir=...)"
        )
    return todo


def new_model(cfg: DictConfig, train_split: Split, run: RunDir) -> MultimodalLM:
    """A fresh model for a new run, mini experts pretrained first where their recipe is not cached;
    checkpoints/init is complete once this returns."""
    model = build_model(cfg, train_split, run, expert_sources(cfg))
    (run.checkpoint("init") / "stage.json").write_text(json.dumps({"stage": "init", "status": "complete"}))
    return model


def record_architecture(run: RunDir, model: MultimodalLM, fusion_name: str) -> None:
    """Log and store every expert's real input size and grids (a silent resolution mix-up shows here), where
    every model's weights really came from (hub, package stand-in, local), and what the fusion costs: the
    visual tokens it hands on, its parameters and FLOPs per image."""
    described = {name: expert.describe() for name, expert in model.experts.items()}
    for name, d in described.items():
        console.print(
            f"expert [bold]{name}[/]: {d['family']} from {d['source']} · input {_size(d['input_size'])} px · "
            f"native {_size(d['native_grid'])}×{d['native_channels']} → {d['to_grid']} → "
            f"grid {_size(d['grid'])}×{d['channels']}",
            highlight=False,
        )
    weights = {name: provenance(expert.source) for name, expert in model.experts.items()}
    weights["llm"] = provenance(model.llm.name_or_path) if model.llm.name_or_path else {"source": "run"}
    fusion = {"name": fusion_name, **model.fusion.describe()}
    console.print(
        f"fusion [bold]{fusion['name']}[/]: {fusion['visual_tokens']} tokens × {fusion['out_channels']} channels, "
        f"+{fusion['params']:,} parameters, +{fusion['flops_per_image'] / 1e6:.2f} MFLOPs per image",
        highlight=False,
    )
    run.update_summary(experts=described, fusion=fusion, weights=weights)


def _size(pair: list[int]) -> str:
    return "×".join(map(str, pair))
