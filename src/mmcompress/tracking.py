"""Metric logging: the run directory's metrics.jsonl is the source of truth, W&B a mirror."""

from __future__ import annotations

import json
import netrc
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmcompress.errors import ConfigError


def wandb_mode(requested: str) -> str:
    """`auto`: online when an API key is configured, offline otherwise; WANDB_MODE always wins."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError):
        auth = None
    return "online" if auth else "offline"


class Tracker:
    """Appends one JSON line per logged step and mirrors it to W&B when the logger is wandb."""

    def __init__(self, run_dir: Path, cfg: DictConfig, run_name: str) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.run = None
        if cfg.logger.name == "wandb":
            mode = wandb_mode(cfg.logger.mode)
            if mode not in ("online", "offline", "disabled"):
                raise ConfigError(f"logger.mode={mode!r} must be auto, online, offline or disabled")
            if mode != "disabled":
                import wandb

                self.run = wandb.init(
                    project=cfg.logger.project,
                    entity=cfg.logger.entity,
                    group=cfg.logger.group,
                    name=run_name,
                    id=run_name.replace("/", "-")[-64:],
                    resume="allow",
                    dir=str(run_dir),
                    mode=mode,
                    config=OmegaConf.to_container(cfg, resolve=True),
                )
        elif cfg.logger.name != "none":
            raise ConfigError(f"unknown logger {cfg.logger.name!r}; use logger=wandb or logger=none")

    def log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.run is not None:
            stage = record.get("stage", "run")
            self.run.log(
                {f"{stage}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "time"}
            )

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        if self.run is not None and rows:
            import wandb

            columns = list(rows[0])
            self.run.log({name: wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})

    def log_summary(self, values: dict[str, float]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
