"""Metric logging: the run directory's metrics.jsonl is the source of truth, W&B a mirror.

W&B failing never costs a metric or a run: the first failure prints one warning, switches the mirror off
and is recorded in `FAILURES`; training goes on to the end, and `mmcompress` then exits non-zero with one
line saying where every metric is (cli.main reads `FAILURES`). W&B failing to start is a one-line error.
"""

from __future__ import annotations

import contextlib
import json
import netrc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.markup import escape

from mmcompress.console import console
from mmcompress.errors import ConfigError, UserError

FAILURES: list[str] = []  # one line per W&B mirror switched off in this process, for the exit status
WANDB_MODES = ("online", "offline", "disabled")


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


def check_logger(cfg: DictConfig) -> str | None:
    """The W&B mode the config's logger asks for (None: no W&B), or a one-line ConfigError; cheap, so it
    can run before a run directory exists."""
    if cfg.logger.name == "none":
        return None
    if cfg.logger.name != "wandb":
        raise ConfigError(f"unknown logger {cfg.logger.name!r}; use logger=wandb or logger=none")
    mode = wandb_mode(cfg.logger.mode)
    if mode not in WANDB_MODES:
        source = f"WANDB_MODE={mode}" if os.environ.get("WANDB_MODE") else f"logger.mode={mode}"
        raise ConfigError(f"{source} is not a W&B mode; use auto, {', '.join(WANDB_MODES)} or logger=none")
    return None if mode == "disabled" else mode


def _reason(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for a one-line error."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


class Tracker:
    """Appends one JSON line per logged step and mirrors it to W&B when the logger is wandb."""

    def __init__(self, run_dir: Path, cfg: DictConfig, run_name: str) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.run = None
        mode = check_logger(cfg)
        if mode is not None:
            import wandb

            try:
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
            except Exception as exc:  # wandb raises its own error types, and plain ones from its service
                raise UserError(
                    f"W&B could not start in {mode} mode ({_reason(exc)}); check `wandb login`, the "
                    "network and logger.project/entity, or use logger=none (metrics.jsonl needs no W&B)"
                ) from None

    def log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:  # a full disk fails at write or close, where the error has no file name
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        stage = record.get("stage", "run")
        values = {f"{stage}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "time"}
        self._mirror(f"{stage} step {record.get('step', '?')}", lambda run: run.log(values))

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        if self.run is not None and rows:
            import wandb

            columns = list(rows[0])
            data = [[r[c] for c in columns] for r in rows]
            self._mirror(
                f"the {name} table", lambda run: run.log({name: wandb.Table(columns=columns, data=data)})
            )

    def log_summary(self, values: dict[str, float]) -> None:
        self._mirror("the summary", lambda run: run.summary.update(values))

    def close(self) -> None:
        self._mirror("the end of the run", lambda run: run.finish())
        self.run = None

    def _mirror(self, where: str, action: Callable[[Any], object]) -> None:
        """`action(wandb_run)`; its first failure switches the mirror off with one warning line."""
        if self.run is None:
            return
        try:
            action(self.run)
        except Exception as exc:  # a W&B outage must not stop training: metrics.jsonl has everything
            run, self.run = self.run, None
            FAILURES.append(
                f"W&B logging failed at {where} ({_reason(exc)}); the run went on and every metric is in "
                f"{self.path} (W&B has them up to there): check `wandb login` and the network, or use logger=none"
            )
            console.print(
                f"[yellow]warning:[/] {escape(f'W&B logging failed at {where} ({_reason(exc)})')}; W&B is "
                "off for the rest of this run, metrics.jsonl keeps every metric",
                soft_wrap=True,
            )
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)
