"""Stages: prealign → align → finetune train what their config says; eval scores the result.

`train(cfg)` is the whole `mmcompress train` command: it finds (or creates) the run directory, skips
completed stages, runs the rest and evaluates. A stage's checkpoint directory appears only complete
(written under a temporary name, then renamed); an interrupted stage resumes from its last trainer-state
checkpoint (`train.checkpoint_every`, see resume.py) and ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from mmcompress import data as datasets
from mmcompress import distributed, resume
from mmcompress.assembly import build_model, check_init_from, load_model, save_parts
from mmcompress.console import console, progress
from mmcompress.data.benchmarks import check_benchmarks, from_split
from mmcompress.data.llava import IGNORE_INDEX, Split, encode_for_training, open_image, pad
from mmcompress.errors import ConfigError, UserError
from mmcompress.evaluation import evaluate, score_split
from mmcompress.features import check_mode, split_features
from mmcompress.fusion import FUSIONS
from mmcompress.model import MultimodalLM
from mmcompress.optim import check_schedule, scheduler
from mmcompress.pruning import PRUNERS
from mmcompress.rundir import RunDir, environment, run_id
from mmcompress.signals import ExpertTokens, SignalSpec
from mmcompress.tracking import Tracker, check_logger

TRAINING_STAGES = ("prealign", "align", "finetune")
PRECISIONS = ("fp32", "bf16")
ALL_STAGES = (*TRAINING_STAGES, "eval")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    return torch.device(name)


def validate(cfg: DictConfig) -> None:
    """Catch bad values before any work starts, each with a one-line message."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} must be an integer, e.g. seed=0")
    check_logger(cfg)
    unknown = [s for s in cfg.stages if s not in ALL_STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; stages is a list drawn from {', '.join(ALL_STAGES)}")
    for name in TRAINING_STAGES:
        stage = cfg.stage[name]
        for key, kind in (("lr", float), ("steps", int), ("batch_size", int)):
            value = stage.get(key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (kind is int and not isinstance(value, int))
                or value <= 0
            ):
                raise ConfigError(f"stage.{name}.{key}={value!r} must be a positive {kind.__name__}")
    check_schedule(cfg.optim.schedule)
    check_training(cfg)
    check_mode(cfg.train.cache_features)
    FUSIONS[cfg.fusion.name].check(list(cfg.encoder.experts), cfg.fusion)
    check_pruning(cfg)
    check_benchmarks(cfg)
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        key = sorted(missing)[0]
        raise ConfigError(f"{key} is required by this config; set it on the command line, e.g. {key}=...")
    local = {"llm.path": cfg.llm.get("path")}
    local |= {f"encoder.experts.{n}.checkpoint": e.checkpoint for n, e in cfg.encoder.experts.items()}
    for key, value in local.items():  # hub ids ("org/name") can only be checked by loading them
        if (
            isinstance(value, str)
            and value.startswith(("/", ".", "~"))
            and not Path(value).expanduser().exists()
        ):
            raise ConfigError(f"{key}={value} does not exist; give an existing directory or a hub id")


def check_training(cfg: DictConfig) -> None:
    """Precision, LoRA, accumulation, checkpointing and process counts, each with its fix."""
    distributed.check(cfg)
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision={cfg.precision!r} is not one of {', '.join(PRECISIONS)}")
    if (
        cfg.precision == "bf16"
        and resolve_device(cfg.device).type == "cuda"
        and not torch.cuda.is_bf16_supported()
    ):
        raise ConfigError("precision=bf16 needs a GPU with bfloat16 support; use precision=fp32 here")
    for key, value, low in (
        ("lora.r", cfg.lora.r, 0),
        ("train.checkpoint_every", cfg.train.checkpoint_every, 0),
        (
            "train.micro_batch_size",
            1 if cfg.train.micro_batch_size is None else cfg.train.micro_batch_size,
            1,
        ),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key}={value!r} must be an integer ≥ {low}")
    processes = int(os.environ.get("WORLD_SIZE", cfg.distributed.nproc))
    for name in TRAINING_STAGES:
        if name in cfg.stages and cfg.stage[name].batch_size % processes:
            raise ConfigError(
                f"stage.{name}.batch_size={cfg.stage[name].batch_size} does not split evenly over {processes} "
                f"processes; the batch size is global, so give a multiple of {processes}"
            )


def check_pruning(cfg: DictConfig) -> None:
    """The pruning method, its settings and where it acts, checked against the fusion."""
    pruner = PRUNERS[cfg.pruning.name](cfg.pruning)
    if pruner.needs:
        SignalSpec.from_config(cfg.pruning)
    if pruner.where == "experts" and not FUSIONS[cfg.fusion.name].prunes_experts:
        raise ConfigError(
            f"pruning.where=experts is not possible with fusion={cfg.fusion.name}: its positions assume the "
            "full grid of every expert; use pruning.where=fused"
        )
    if cfg.get("init_from"):
        check_init_from(cfg)


def run_directory(cfg: DictConfig) -> RunDir:
    return RunDir(Path(cfg.run_dir) if cfg.run_dir else Path(cfg.paths.runs) / cfg.name / run_id(cfg))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    device = ctx.device
    run = run_directory(cfg)
    with ctx.main_first():
        datasets.dataset_dir(cfg)  # a missing data path fails here, before a run directory exists
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
        seed_everything(cfg.seed)
        todo = _stages_to_run(cfg, run)
        model = None
        if todo:
            with ctx.main_first():  # rank 0 writes checkpoints/init; the others load it
                train_split = datasets.load(cfg, "train")
                resume = run.stage_complete("init") or cfg.get("init_from")
                model = load_model(cfg, run) if resume else _new_model(cfg, train_split, run)
            if ctx.is_main:
                record_architecture(run, model, cfg.fusion.name)
            sharded = ctx.active and ctx.strategy == "fsdp"  # FSDP keeps the whole model off the GPU
            trainer = Trainer(cfg, model.to("cpu" if sharded else device), train_split, tracker, device, ctx)
            for stage in todo:
                trainer.run_stage(stage, run)
        if not ctx.is_main:
            return run
        if "eval" in cfg.stages:
            evaluate(cfg, run, tracker, model=model, device=device)
        worked = bool(todo) or "eval" in cfg.stages  # a rerun with nothing to do keeps the recorded time
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


def _new_model(cfg: DictConfig, train_split: Split, run: RunDir) -> MultimodalLM:
    model = build_model(cfg, train_split, run)
    (run.checkpoint("init") / "stage.json").write_text(json.dumps({"stage": "init", "status": "complete"}))
    return model


def record_architecture(run: RunDir, model: MultimodalLM, fusion_name: str) -> None:
    """Log and store every expert's real input size and grids (a silent resolution mix-up shows here) and
    what the fusion costs: the visual tokens it hands on, its parameters and FLOPs per image."""
    described = {name: expert.describe() for name, expert in model.experts.items()}
    for name, d in described.items():
        console.print(
            f"expert [bold]{name}[/]: {d['family']} from {d['source']} · input {_size(d['input_size'])} px · "
            f"native {_size(d['native_grid'])}×{d['native_channels']} → {d['to_grid']} → "
            f"grid {_size(d['grid'])}×{d['channels']}",
            highlight=False,
        )
    fusion = {"name": fusion_name, **model.fusion.describe()}
    console.print(
        f"fusion [bold]{fusion['name']}[/]: {fusion['visual_tokens']} tokens × {fusion['out_channels']} channels, "
        f"+{fusion['params']:,} parameters, +{fusion['flops_per_image'] / 1e6:.2f} MFLOPs per image",
        highlight=False,
    )
    run.update_summary(experts=described, fusion=fusion)


def _size(pair: list[int]) -> str:
    return "×".join(map(str, pair))


class Trainer:
    """Runs training stages on one model, sharing a cache of frozen-expert features between them.

    Each optimizer step takes the step's global batch (a pure function of seed, stage and step, so a
    resumed run sees the same data), this process's slice of it, and forward/backward in micro-batches.
    Losses are summed and gradients scaled once by the global count of answer tokens, so neither the
    number of processes nor of micro-batches changes the update."""

    def __init__(
        self,
        cfg: DictConfig,
        model: MultimodalLM,
        split: Split,
        tracker: Tracker | None,
        device: torch.device,
        ctx: distributed.Context | None = None,
    ) -> None:
        self.cfg, self.model, self.split, self.tracker, self.device = cfg, model, split, tracker, device
        self.ctx = ctx or distributed.Context(device=device)
        encoded = encode_for_training(split.samples, model.tokenizer, cfg.data.max_text_tokens)
        self.lengths = torch.tensor([len(ids) for ids, _ in encoded])  # (S,)
        self.input_ids = pad([ids for ids, _ in encoded], model.tokenizer.pad_token_id)  # (S, L_max)
        self.labels = pad([labels for _, labels in encoded], IGNORE_INDEX)  # (S, L_max)
        self.image_of = torch.tensor([s.image for s in split.samples])  # (S,) sample → image index
        self.features: dict[str, ExpertTokens] | None = None  # expert → (n_images, N, C), frozen experts only
        self.val_split: Split | None = None  # loaded on first use by train.val_every

    def run_stage(self, stage: str, run: RunDir) -> None:
        scfg, cfg = self.cfg.stage[stage], self.cfg
        seed_everything(cfg.seed + ALL_STAGES.index(stage))  # a stage's randomness never depends on the last
        trainable = self._set_trainable(stage, list(scfg.trainable))
        if not trainable:
            raise ConfigError(f"stage.{stage}.trainable={list(scfg.trainable)} selects no parameters")
        if any(name.startswith("experts.") for name in trainable):
            self.features = None  # the experts change; cached features would be stale
        elif self.features is None:
            with self.ctx.main_first():  # rank 0 fills the disk cache, the others read it
                features = split_features(
                    dict(self.model.experts),
                    self.split.images,
                    cfg,
                    next(self.model.parameters()).device,  # where the experts are (CPU under FSDP)
                    "train images",
                    self.model.signal_spec,
                )
            self.features = features and {name: f.to(self.device) for name, f in features.items()}
        self._checkpoint_activations(trainable)
        wrapped = self.ctx.wrap(self.model)
        optimizer = self._optimizer(wrapped, scfg)
        schedule = scheduler(
            optimizer, cfg.optim.schedule, scfg.steps, cfg.optim.warmup_ratio, cfg.optim.decay_ratio
        )
        order = BatchOrder(len(self.lengths), scfg.batch_size, cfg.seed + ALL_STAGES.index(stage))
        saves = resume.resume_dir(run.path / "checkpoints", stage)
        state = resume.load(saves, wrapped, optimizer, schedule, set(trainable))
        if state is None:
            state = resume.Resumed(step=0)
        else:
            console.print(f"stage [bold]{stage}[/] resumes after step {state.step} from {saves}")
            if self.ctx.is_main:
                resume.rewind_metrics(run.path / "metrics.jsonl", stage, state.step)
        params = [p for p in wrapped.parameters() if p.requires_grad]
        wrapped.train()
        start, window = time.time(), time.time()
        with progress() as bar:
            task = bar.add_task(f"{stage}", total=scfg.steps, completed=state.step, info="")
            for step in range(state.step + 1, scfg.steps + 1):
                loss, grad_norm = self._step(
                    wrapped, optimizer, params, order.batch(step), stage == "prealign"
                )
                if not math.isfinite(loss) or not math.isfinite(grad_norm):
                    what = (
                        f"loss became {loss}"
                        if not math.isfinite(loss)
                        else f"gradient norm became {grad_norm}"
                    )
                    kept = resume.latest(saves)
                    raise UserError(
                        f"the {stage} {what} at step {step}, before any update from it; "
                        + (
                            f"the last good state (step {resume.step_of(kept)}) is kept in {kept}; "
                            if kept
                            else ""
                        )
                        + f"lower stage.{stage}.lr (now {scfg.lr}) or optim.grad_clip and rerun"
                    )
                schedule.step()
                state.step, state.window = step, [*state.window, loss]
                if step % cfg.train.log_every == 0 or step == scfg.steps:
                    elapsed = time.time() - window
                    final_loss = sum(state.window) / len(state.window)
                    self._log(
                        {
                            "stage": stage,
                            "step": step,
                            "loss": final_loss,
                            "lr": schedule.get_last_lr()[0],
                            "samples_per_s": len(state.window) * scfg.batch_size / max(elapsed, 1e-9),
                        }
                    )
                    bar.update(task, info=f"loss {final_loss:.4f}")
                    window, state.window = time.time(), []
                if cfg.train.val_every and (step % cfg.train.val_every == 0 or step == scfg.steps):
                    self._gather(wrapped)  # FSDP: the whole model takes the current weights
                    self._validate(stage, step)
                    window = time.time()
                if (
                    cfg.train.checkpoint_every
                    and step % cfg.train.checkpoint_every == 0
                    and step < scfg.steps
                ):
                    resume.save(saves, wrapped, optimizer, schedule, state, set(trainable), self.ctx.is_main)
                bar.update(task, advance=1)
        self._gather(wrapped)
        if stage == "prealign" and self.model.warm_start_projector():
            console.print("the joint projector starts from the pre-aligned one (a single expert)")
        self._merge_lora()
        if self.ctx.is_main:
            self._save(stage, run, list(scfg.trainable), scfg.steps, final_loss, time.time() - start)
            shutil.rmtree(saves, ignore_errors=True)
        self.ctx.barrier()

    def _step(
        self,
        wrapped: nn.Module,
        optimizer: torch.optim.Optimizer,
        params: list[nn.Parameter],
        indices: torch.Tensor,
        prealign: bool,
    ) -> tuple[float, float]:
        """One optimizer step on the global batch `indices`; returns its mean loss over answer tokens and
        the gradient norm before clipping. A non-finite one skips the update."""
        local = self.ctx.shard(indices)  # (B / processes,)
        chunks = local.split(self.cfg.train.micro_batch_size or len(local))
        totals = torch.zeros(2, dtype=torch.float64)  # loss sum, answer tokens on this process
        optimizer.zero_grad(set_to_none=True)
        for i, chunk in enumerate(chunks):
            with self.ctx.no_sync(wrapped, last=i == len(chunks) - 1):
                with torch.autocast(self.device.type, torch.bfloat16, enabled=self.cfg.precision == "bf16"):
                    loss_sum, count = wrapped(**self._batch(chunk), prealign=prealign)
                loss_sum.backward()
            totals += torch.stack([loss_sum.detach().double().cpu(), count.double().cpu()])
        loss_sum, count = self.ctx.all_sum(totals).tolist()
        loss = loss_sum / count
        if not math.isfinite(loss):
            return loss, math.nan
        for p in params:  # the all-reduce averaged over processes; make it a mean over answer tokens
            if p.grad is not None:
                p.grad.mul_(self.ctx.world / count)
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        )  # same on every rank
        if math.isfinite(grad_norm):
            optimizer.step()
        return loss, grad_norm

    def _set_trainable(self, stage: str, groups: list[str]) -> list[str]:
        """Freeze all but `groups` (with LoRA, the LLM's adapters instead of its weights); the trainable
        parameter names."""
        self.model.set_trainable(groups, stage)
        if "llm" in groups and self.cfg.lora.r > 0:
            from peft import LoraConfig, get_peft_model

            lora = self.cfg.lora
            config = LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.targets)
            )
            self.model.llm = get_peft_model(self.model.llm, config)  # freezes the base weights
        return [name for name, p in self.model.named_parameters() if p.requires_grad]

    def _merge_lora(self) -> None:
        """Fold LoRA adapters into the LLM's weights, so checkpoints and evaluation see a plain LLM."""
        from peft import PeftModel

        if isinstance(self.model.llm, PeftModel):
            self.model.llm = self.model.llm.merge_and_unload()

    def _checkpoint_activations(self, trainable: list[str]) -> None:
        """`train.gradient_checkpointing`: recompute activations of the LLM and trained experts in backward."""
        if not self.cfg.train.gradient_checkpointing:
            return
        modules = [self.model.llm] + [
            e.model
            for n, e in self.model.experts.items()
            if any(t.startswith(f"experts.{n}.") for t in trainable)
        ]
        for module in modules:
            if not module.supports_gradient_checkpointing:
                continue
            if hasattr(module, "activation_checkpointing_enable"):  # its name from transformers 5.x on
                module.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False}
                )
            else:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def _optimizer(self, wrapped: nn.Module, scfg: DictConfig) -> torch.optim.AdamW:
        """AdamW over the trainable parameters; unfrozen experts usually want a smaller step (encoder_lr)."""
        named = [(n.removeprefix("module."), p) for n, p in wrapped.named_parameters() if p.requires_grad]
        return torch.optim.AdamW(
            [
                {"params": [p for n, p in named if not n.startswith("experts.")], "lr": scfg.lr},
                {
                    "params": [p for n, p in named if n.startswith("experts.")],
                    "lr": scfg.get("encoder_lr") or scfg.lr,
                },
            ],
            weight_decay=self.cfg.optim.weight_decay,
            betas=tuple(self.cfg.optim.betas),
        )

    def _gather(self, wrapped: nn.Module) -> None:
        """After FSDP training, every process's whole model takes the trained (unsharded) weights."""
        if wrapped is self.model or isinstance(wrapped, nn.parallel.DistributedDataParallel):
            return  # the same parameters
        options = StateDictOptions(full_state_dict=True, ignore_frozen_params=True)
        state = get_model_state_dict(wrapped, options=options)
        self.model.load_state_dict({k: v.to("cpu") for k, v in state.items()}, strict=False)

    def _log(self, record: dict) -> None:
        if self.tracker is not None:
            self.tracker.log(record)

    def _validate(self, stage: str, step: int) -> None:
        """Score the val split now: per-category curves show when each skill is learned."""
        if not self.ctx.is_main:
            return
        if self.val_split is None:
            self.val_split = datasets.load(self.cfg, "val")
        val = from_split(self.val_split, "val", self.cfg.train.val_samples)
        _, scores, _ = score_split(self.model.eval(), val, self.cfg)
        self.model.train()
        values = {"overall": scores["overall"], **scores["categories"]}
        self._log({"stage": stage, "step": step, **{f"val/{k}": v for k, v in values.items()}})
        console.print(
            f"{stage} step {step} · val " + " ".join(f"{k} {v:.3f}" for k, v in values.items()),
            highlight=False,
        )

    def _save(self, stage, run, trained, steps, final_loss, seconds) -> None:
        target = run.checkpoint(stage)
        tmp = target.with_name(stage + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_parts(self.model, tmp, trained)
        info = {
            "stage": stage,
            "status": "complete",
            "steps": steps,
            "trained": trained,
            "final_loss": final_loss,
            "wall_time_s": round(seconds, 1),
        }
        (tmp / "stage.json").write_text(json.dumps(info, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        run.update_summary(stages={stage: info})
        console.print(f"stage [bold]{stage}[/] complete: loss {final_loss:.4f} in {seconds:.0f} s → {target}")

    def _batch(self, indices: torch.Tensor) -> dict:
        """Samples `indices` as one batch: right-padded ids and labels, cached features or fresh pixels."""
        lengths = self.lengths[indices]  # (B,)
        width = int(lengths.max())
        batch = {
            "input_ids": self.input_ids[indices, :width].to(self.device),  # (B, L)
            "attention_mask": (torch.arange(width)[None] < lengths[:, None]).long().to(self.device),
            "labels": self.labels[indices, :width].to(self.device),
        }
        images = self.image_of[indices]
        if self.features is not None:
            batch["features"] = {name: f[images] for name, f in self.features.items()}
        else:
            batch["pixels"] = self._pixels(images)
        return batch

    def _pixels(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pil = [open_image(self.split.images[i]) for i in images.tolist()]
        return {name: expert.preprocess(pil).to(self.device) for name, expert in self.model.experts.items()}


class BatchOrder:
    """The global batch of every step as a pure function of (seed, step): a fresh seeded permutation each
    epoch, no partial batches. A resumed stage needs no data-loader state, only its step."""

    def __init__(self, samples: int, batch_size: int, seed: int) -> None:
        self.samples, self.batch_size, self.seed = samples, min(batch_size, samples), seed
        self.per_epoch = samples // self.batch_size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def batch(self, step: int) -> torch.Tensor:
        """Sample indices (B,) of optimizer step `step` (counted from 1)."""
        epoch, position = divmod(step - 1, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.samples, generator=generator)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]
