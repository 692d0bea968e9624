"""Config checks before any work starts: every bad value is a one-line ConfigError naming its fix, so a
sweep can mark an impossible combination invalid without launching it."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mmcompress.data.benchmarks import check_benchmarks
from mmcompress.data.loading import worker_count
from mmcompress.errors import ConfigError
from mmcompress.model.build import resolve_device
from mmcompress.model.checkpoints import check_init_from
from mmcompress.model.features import check_mode
from mmcompress.model.fusion import FUSIONS
from mmcompress.model.llm import LLMS
from mmcompress.pruning.methods import PRUNERS, Pruner
from mmcompress.tracking import check_logger
from mmcompress.training import distributed
from mmcompress.training.schedules import check_schedule
from mmcompress.training.stages import ALL_STAGES, TRAINING_STAGES
from mmcompress.vision.families import EXPERTS
from mmcompress.vision.signals import SignalSpec

PRECISIONS = ("fp32", "bf16", "auto")


def validate(cfg: DictConfig) -> None:
    """Catch bad values before any work starts, each with a one-line message."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} must be an integer, e.g. seed=0")
    check_logger(cfg)
    unknown = [s for s in cfg.stages if s not in ALL_STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; stages is a list drawn from {', '.join(ALL_STAGES)}")
    for name in TRAINING_STAGES:
        if OmegaConf.select(cfg, f"llm.lr.{name}") is None and OmegaConf.is_interpolation(
            cfg.stage[name], "lr"
        ):
            raise ConfigError(
                f"llm.lr.{name} is not set: every llm option names its stage learning rates (see "
                f"conf/llm/hf.yaml), or set stage.{name}.lr"
            )
        stage = cfg.stage[name]
        length = ("epochs", float) if stage.get("epochs") is not None else ("steps", int)
        for key, kind in (("lr", float), length, ("batch_size", int)):
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
    check_experts(cfg)
    _ = LLMS[cfg.llm.name]  # an unknown LLM kind names the valid ones
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


def check_experts(cfg: DictConfig) -> None:
    """An expert without a family is a preset's or override's settings for an expert the encoder lacks."""
    for name, expert in cfg.encoder.experts.items():
        if expert.get("family") is None:
            raise ConfigError(
                f"encoder.experts.{name} has settings but no family: an override or preset (e.g. experiment=...) "
                f"configures a '{name}' expert the chosen encoder does not have; choose an encoder with a '{name}' expert or drop that override"
            )
        _ = EXPERTS[expert.family]  # an unknown family names the valid ones


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
        raise ConfigError("precision=bf16 needs a GPU with bfloat16 support; use precision=fp32 or auto here")
    for key in ("train.compile", "train.gradient_checkpointing", "optim.fused"):
        value = OmegaConf.select(cfg, key, default=False)  # a run made before the key existed: off
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
    if cfg.projector.get("position_at", "input") not in ("input", "output"):
        raise ConfigError(f"projector.position_at={cfg.projector.position_at!r}; choose input or output")
    for key, value, low in (
        ("projector.positions", cfg.projector.get("positions", 0), 0),
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
    worker_count(cfg.train.num_workers)  # auto or ≥ 0
    cap = cfg.train.get("feature_store_max_gb")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap <= 0):
        raise ConfigError(
            f"train.feature_store_max_gb={cap!r} must be a positive number of GB, or null (no cap)"
        )
    processes = int(os.environ.get("WORLD_SIZE", cfg.distributed.nproc))
    for name in TRAINING_STAGES:
        if name in cfg.stages and cfg.stage[name].batch_size % processes:
            raise ConfigError(
                f"stage.{name}.batch_size={cfg.stage[name].batch_size} does not split evenly over {processes} "
                f"processes; the batch size is global, so give a multiple of {processes}"
            )


def check_pruning(cfg: DictConfig) -> None:
    """The pruning method, its settings and where it acts, checked against the fusion."""
    method = PRUNERS[cfg.pruning.name]
    method.check(cfg.pruning)
    if method.needs:
        SignalSpec.from_config(cfg.pruning)
    if Pruner.where_of(cfg.pruning) == "experts" and FUSIONS[cfg.fusion.name].full_grid_inputs:
        raise ConfigError(
            f"pruning.where=experts is not possible with fusion={cfg.fusion.name}: its positions assume the "
            "full grid of every expert; use pruning.where=fused"
        )
    if cfg.get("init_from"):
        check_init_from(cfg)


def training_precision(cfg: DictConfig, device: torch.device) -> str:
    """`fp32` or `bf16`: `auto` is bf16 where the device computes it natively (a GPU with bfloat16, a CPU
    with AVX-512 BF16 or AMX), else fp32, where bf16 would be emulated and slower."""
    if cfg.precision != "auto":
        return cfg.precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (Linux's /proc/cpuinfo flags; elsewhere: no)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))
