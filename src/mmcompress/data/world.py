"""The synthetic world: the synthvqa benchmark generated once from `cfg.world` into the cache."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmcompress.console import console, progress
from mmcompress.data.synthvqa import SynthVQASpec, generate
from mmcompress.errors import ConfigError


def world_spec(cfg: DictConfig) -> SynthVQASpec:
    fields = OmegaConf.to_container(cfg.world, resolve=True)
    try:
        return SynthVQASpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except TypeError as exc:
        raise ConfigError(f"bad world setting: {exc}") from None


def world_dir(cfg: DictConfig) -> Path:
    """The generated benchmark's directory, generating it first if this machine has none yet."""
    spec = world_spec(cfg)
    root = Path(cfg.paths.cache).expanduser() / "data"
    target = root / f"synthvqa-{spec.cache_key()}"
    if (target / "manifest.json").is_file():
        return target
    with progress() as bar:
        task = bar.add_task("generate synthvqa", total=None, info=str(target))
        path = generate(
            spec, root, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    console.print(f"synthvqa written to {path}")
    return path
