"""The trainer: one training stage on one model, from its first (or resumed) step to its checkpoint.

A stage's checkpoint directory appears only complete (written under a temporary name, then renamed); an
interrupted stage resumes from its last trainer-state checkpoint (`train.checkpoint_every`, resume.py) and
ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from mmcompress.console import console, progress
from mmcompress.data import splits
from mmcompress.data.benchmarks import from_split
from mmcompress.data.llava import Split
from mmcompress.data.loading import pixel_batches, worker_count
from mmcompress.errors import ConfigError, UserError
from mmcompress.evaluation.answering import score_split
from mmcompress.model.checkpoints import save_parts
from mmcompress.model.features import split_features
from mmcompress.model.multimodal import MultimodalLM
from mmcompress.rundir import RunDir
from mmcompress.tracking import Tracker
from mmcompress.training import distributed, resume
from mmcompress.training.batches import BatchOrder, TokenizedSplit
from mmcompress.training.checks import training_precision
from mmcompress.training.schedules import scheduler
from mmcompress.training.stages import ALL_STAGES, merge_lora, set_trainable, warm_start_projector
from mmcompress.vision.signals import ExpertTokens


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
        self.text = TokenizedSplit(split, model.tokenizer, cfg.data.max_text_tokens)
        self.bf16 = training_precision(cfg, device) == "bf16"
        self.features: dict[str, ExpertTokens] | None = None  # expert → (n_images, N, C), frozen experts only
        self.val_split: Split | None = None  # loaded on first use by train.val_every

    def run_stage(self, stage: str, run: RunDir) -> None:
        """Train `stage` to its last step (resuming where a killed run stopped), then save its checkpoint."""
        scfg, cfg = self.cfg.stage[stage], self.cfg
        seed_everything(cfg.seed + ALL_STAGES.index(stage))  # a stage's randomness never depends on the last
        trainable = set_trainable(self.model, stage, list(scfg.trainable), cfg.lora)
        if not trainable:
            raise ConfigError(f"stage.{stage}.trainable={list(scfg.trainable)} selects no parameters")
        self._cache_features(trainable)
        self._checkpoint_activations(trainable)
        wrapped = self.ctx.wrap(self.model)
        optimizer = self._optimizer(wrapped, scfg)
        schedule = scheduler(
            optimizer, cfg.optim.schedule, scfg.steps, cfg.optim.warmup_ratio, cfg.optim.decay_ratio
        )
        saves = resume.resume_dir(run.path / "checkpoints", stage)
        state = self._resume(stage, run, saves, wrapped, optimizer, schedule, set(trainable))
        start = time.time()
        if cfg.train.compile:  # compiles on the first step (and once more when the text length first changes)
            self.model.training_decoder = torch.compile(self.model.llm.get_decoder().forward)
        try:
            final_loss = self._steps(stage, wrapped, optimizer, schedule, state, saves, set(trainable))
        finally:
            self.model.training_decoder = None
        self._gather(wrapped)
        if stage == "prealign" and warm_start_projector(self.model):
            console.print("the joint projector starts from the pre-aligned one (a single expert)")
        merge_lora(self.model)
        if self.ctx.is_main:
            self._save(stage, run, list(scfg.trainable), scfg.steps, final_loss, time.time() - start)
            shutil.rmtree(saves, ignore_errors=True)
        self.ctx.barrier()

    def _cache_features(self, trainable: list[str]) -> None:
        """Frozen experts' features, encoded once for every stage; trained experts run on pixels."""
        if any(name.startswith("experts.") for name in trainable):
            self.features = None  # the experts change; cached features would be stale
        elif self.features is None:
            with self.ctx.main_first():  # rank 0 fills the disk cache, the others read it
                features = split_features(
                    dict(self.model.experts),
                    self.split.images,
                    self.cfg,
                    next(self.model.parameters()).device,  # where the experts are (CPU under FSDP)
                    "train images",
                    self.model.signal_spec,
                )
            self.features = features and {name: f.to(self.device) for name, f in features.items()}

    def _resume(self, stage, run, saves, wrapped, optimizer, schedule, trainable) -> resume.Resumed:
        """The state an interrupted stage left in its last trainer-state checkpoint, or step 0."""
        state = resume.load(saves, wrapped, optimizer, schedule, trainable)
        if state is None:
            return resume.Resumed(step=0)
        console.print(f"stage [bold]{stage}[/] resumes after step {state.step} from {saves}")
        if self.ctx.is_main:
            resume.rewind_metrics(run.path / "metrics.jsonl", stage, state.step)
        return state

    def _steps(self, stage, wrapped, optimizer, schedule, state, saves, trainable) -> float:
        """The stage's remaining optimizer steps, with logging, validation and trainer-state checkpoints;
        returns the mean loss of the last logged window."""
        scfg, cfg = self.cfg.stage[stage], self.cfg
        order = BatchOrder(len(self.text), scfg.batch_size, cfg.seed + ALL_STAGES.index(stage))
        params = [p for p in wrapped.parameters() if p.requires_grad]
        wrapped.train()
        window, final_loss = time.time(), math.nan
        steps = range(state.step + 1, scfg.steps + 1)
        pixels = None if self.features is not None else self._pixel_batches(order, steps)
        with progress() as bar:
            task = bar.add_task(f"{stage}", total=scfg.steps, completed=state.step, info="")
            for step in steps:
                loss, grad_norm = self._step(
                    wrapped,
                    optimizer,
                    params,
                    order.batch(step),
                    stage == "prealign",
                    None if pixels is None else next(pixels),
                )
                self._stop_if_not_finite(stage, step, loss, grad_norm, saves)
                schedule.step()
                state.step, state.window = step, [*state.window, loss]
                if step % cfg.train.log_every == 0 or step == scfg.steps:
                    final_loss = sum(state.window) / len(state.window)
                    samples = len(state.window) * scfg.batch_size
                    self._log(
                        {
                            "stage": stage,
                            "step": step,
                            "loss": final_loss,
                            "lr": schedule.get_last_lr()[0],
                            "samples_per_s": samples / max(time.time() - window, 1e-9),
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
                    resume.save(saves, wrapped, optimizer, schedule, state, trainable, self.ctx.is_main)
                bar.update(task, advance=1)
        return final_loss

    def _stop_if_not_finite(self, stage: str, step: int, loss: float, grad_norm: float, saves: Path) -> None:
        """A non-finite loss or gradient norm stops the stage before its update, naming the last good state."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return
        what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {grad_norm}"
        kept = resume.latest(saves)
        raise UserError(
            f"the {stage} {what} at step {step}, before any update from it; "
            + (f"the last good state (step {resume.step_of(kept)}) is kept in {kept}; " if kept else "")
            + f"lower stage.{stage}.lr (now {self.cfg.stage[stage].lr}) or optim.grad_clip and rerun"
        )

    def _step(
        self,
        wrapped: nn.Module,
        optimizer: torch.optim.Optimizer,
        params: list[nn.Parameter],
        indices: torch.Tensor,
        prealign: bool,
        pixels: dict[str, torch.Tensor] | None,
    ) -> tuple[float, float]:
        """One optimizer step on the global batch `indices` (`pixels`: this process's share of its images,
        when the experts run); returns its mean loss over answer tokens and the gradient norm before
        clipping. A non-finite one skips the update."""
        local = self.ctx.shard(indices)  # (B / processes,)
        size = self.cfg.train.micro_batch_size or len(local)
        chunks = local.split(size)
        totals = torch.zeros(2, dtype=torch.float64)  # loss sum, answer tokens on this process
        optimizer.zero_grad(set_to_none=True)
        for i, chunk in enumerate(chunks):
            chunk_pixels = (
                None
                if pixels is None
                else {n: p[i * size : i * size + len(chunk)] for n, p in pixels.items()}
            )
            with self.ctx.no_sync(wrapped, last=i == len(chunks) - 1):
                with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
                    loss_sum, count = wrapped(**self._batch(chunk, chunk_pixels), prealign=prealign)
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
            fused=self.cfg.optim.fused,
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
            self.val_split = splits.load(self.cfg, "val")
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

    def _batch(self, indices: torch.Tensor, pixels: dict[str, torch.Tensor] | None = None) -> dict:
        """Samples `indices` as one batch: right-padded ids and labels, cached features or their `pixels`."""
        batch = self.text.text(indices, self.device)
        if self.features is not None:
            images = self.text.image_of[indices]
            batch["features"] = {name: f[images] for name, f in self.features.items()}
        else:
            batch["pixels"] = pixels
        return batch

    def _pixel_batches(self, order: BatchOrder, steps: range) -> Iterator[dict[str, torch.Tensor]]:
        """The experts' input for this process's share of every step's batch, prepared by worker processes
        ahead of the step (train.num_workers)."""
        images = [self.text.image_of[self.ctx.shard(order.batch(step))].tolist() for step in steps]
        preprocess = {name: expert.preprocess for name, expert in self.model.experts.items()}
        workers = worker_count(self.cfg.train.num_workers)
        return pixel_batches(self.split.images, images, preprocess, workers, self.device)
