"""Stages: prealign → align → finetune train what their config says; eval scores the result.

`train(cfg)` is the whole `mmcompress train` command: it finds (or creates) the run directory, skips
completed stages, runs the rest and evaluates. A stage's checkpoint directory appears only complete
(written under a temporary name, then renamed), so an interrupted stage simply runs again.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mmcompress import data as datasets
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
from mmcompress.tracking import Tracker

TRAINING_STAGES = ("prealign", "align", "finetune")
ALL_STAGES = (*TRAINING_STAGES, "eval")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    return torch.device(name)


def validate(cfg: DictConfig) -> None:
    """Catch bad values before any work starts, each with a one-line message."""
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
    """Run every configured stage that is not complete yet, then evaluate."""
    validate(cfg)
    device = resolve_device(cfg.device)
    datasets.dataset_dir(cfg)  # a missing data path fails here, before a run directory exists
    run = run_directory(cfg)
    run.create(cfg, overrides)
    start = time.time()
    run.update_summary(status="running", error=None, run_id=run.path.name, env=environment())
    console.print(f"[bold]run[/] {run.path}")
    tracker = Tracker(run.path, cfg, f"{cfg.name}/{run.path.name}")
    try:
        seed_everything(cfg.seed)
        todo = _stages_to_run(cfg, run)
        model = None
        if todo:
            train_split = datasets.load(cfg, "train")
            resume = run.stage_complete("init") or cfg.get("init_from")
            model = load_model(cfg, run) if resume else _new_model(cfg, train_split, run)
            record_architecture(run, model, cfg.fusion.name)
            trainer = Trainer(cfg, model.to(device), train_split, tracker, device)
            for stage in todo:
                trainer.run_stage(stage, run)
        if "eval" in cfg.stages:
            evaluate(cfg, run, tracker, model=model, device=device)
        worked = bool(todo) or "eval" in cfg.stages  # a rerun with nothing to do keeps the recorded time
        run.update_summary(
            status="complete", **({"wall_time_s": round(time.time() - start, 1)} if worked else {})
        )
    except KeyboardInterrupt:
        run.update_summary(status="interrupted", wall_time_s=round(time.time() - start, 1))
        raise
    except BaseException as exc:
        run.update_summary(
            status="failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        )
        raise
    finally:
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
    """Runs training stages on one model, sharing a cache of frozen-expert features between them."""

    def __init__(
        self, cfg: DictConfig, model: MultimodalLM, split: Split, tracker: Tracker, device: torch.device
    ) -> None:
        self.cfg, self.model, self.split, self.tracker, self.device = cfg, model, split, tracker, device
        encoded = encode_for_training(split.samples, model.tokenizer, cfg.data.max_text_tokens)
        self.lengths = torch.tensor([len(ids) for ids, _ in encoded])  # (S,)
        self.input_ids = pad([ids for ids, _ in encoded], model.tokenizer.pad_token_id)  # (S, L_max)
        self.labels = pad([labels for _, labels in encoded], IGNORE_INDEX)  # (S, L_max)
        self.image_of = torch.tensor([s.image for s in split.samples])  # (S,) sample → image index
        self.features: dict[str, ExpertTokens] | None = None  # expert → (n_images, N, C), frozen experts only
        self.val_split: Split | None = None  # loaded on first use by train.val_every

    def run_stage(self, stage: str, run: RunDir) -> None:
        scfg = self.cfg.stage[stage]
        groups = self.model.set_trainable(list(scfg.trainable), stage)
        params = [p for group in groups.values() for p in group]
        if not params:
            raise ConfigError(f"stage.{stage}.trainable={list(scfg.trainable)} selects no parameters")
        if groups.get("encoder"):
            self.features = None  # the experts change; cached features would be stale
        elif self.features is None:
            self.features = split_features(
                dict(self.model.experts),
                self.split.images,
                self.cfg,
                self.device,
                "train images",
                self.model.signal_spec,
            )
        encoder_lr = scfg.get("encoder_lr") or scfg.lr  # unfrozen experts usually want a smaller step
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": [p for g, group in groups.items() if g != "encoder" for p in group],
                    "lr": scfg.lr,
                },
                {"params": groups.get("encoder", []), "lr": encoder_lr},
            ],
            weight_decay=self.cfg.optim.weight_decay,
            betas=tuple(self.cfg.optim.betas),
        )
        experts = list(self.model.experts) if stage == "prealign" else [None]
        optim = self.cfg.optim
        schedule = scheduler(optimizer, optim.schedule, scfg.steps, optim.warmup_ratio, optim.decay_ratio)
        order = _shuffled_batches(len(self.lengths), scfg.batch_size, self.cfg.seed + ALL_STAGES.index(stage))
        self.model.train()
        start, window, losses = time.time(), time.time(), []
        with progress() as bar:
            task = bar.add_task(f"{stage}", total=scfg.steps, info="")
            for step in range(1, scfg.steps + 1):
                batch = self._batch(next(order))
                loss = sum(self.model(**batch, expert=e) for e in experts) / len(
                    experts
                )  # prealign: each alone
                if not torch.isfinite(loss):
                    raise UserError(
                        f"the {stage} loss became {loss.item()} at step {step}; lower stage.{stage}.lr "
                        f"(now {scfg.lr}) — checkpoints of earlier stages are kept"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                if step % self.cfg.train.log_every == 0 or step == scfg.steps:
                    elapsed = time.time() - window
                    record = {
                        "stage": stage,
                        "step": step,
                        "loss": sum(losses) / len(losses),
                        "lr": schedule.get_last_lr()[0],
                        "samples_per_s": len(losses) * scfg.batch_size / max(elapsed, 1e-9),
                    }
                    self.tracker.log(record)
                    bar.update(task, info=f"loss {record['loss']:.4f}")
                    window, losses = time.time(), []
                if self.cfg.train.val_every and (step % self.cfg.train.val_every == 0 or step == scfg.steps):
                    self._validate(stage, step)
                    window = time.time()
                bar.update(task, advance=1)
        final = record["loss"]
        if stage == "prealign" and self.model.warm_start_projector():
            console.print("the joint projector starts from the pre-aligned one (a single expert)")
        self._save(
            stage, run, list(scfg.trainable), optimizer, schedule, scfg.steps, final, time.time() - start
        )

    def _validate(self, stage: str, step: int) -> None:
        """Score the val split now: per-category curves show when each skill is learned."""
        if self.val_split is None:
            self.val_split = datasets.load(self.cfg, "val")
        val = from_split(self.val_split, "val", self.cfg.train.val_samples)
        _, scores, _ = score_split(self.model.eval(), val, self.cfg)
        self.model.train()
        values = {"overall": scores["overall"], **scores["categories"]}
        self.tracker.log({"stage": stage, "step": step, **{f"val/{k}": v for k, v in values.items()}})
        console.print(
            f"{stage} step {step} · val " + " ".join(f"{k} {v:.3f}" for k, v in values.items()),
            highlight=False,
        )

    def _save(self, stage, run, trained, optimizer, schedule, steps, final_loss, seconds) -> None:
        target = run.checkpoint(stage)
        tmp = target.with_name(stage + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_parts(self.model, tmp, trained)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(),
                "step": steps,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state()[1],
                    "python": random.getstate()[1],
                },
            },
            tmp / "trainer_state.pt",
        )
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


def _shuffled_batches(n: int, batch_size: int, seed: int):
    """Endless batches of sample indices: a fresh seeded permutation every epoch, no partial batches."""
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for lo in range(0, n - batch_size + 1, batch_size):
            yield order[lo : lo + batch_size]
