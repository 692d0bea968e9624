"""The run directory is the contract between `train`, `eval` and every later tool.

    <run>/config.yaml  overrides.txt  metrics.jsonl  summary.json  checkpoints/<stage>/  eval/<bench>.jsonl

Files are replaced atomically (write to a temporary file, then rename), so a run never looks more
finished than it is. The run id is a hash of the resolved config minus the keys that do not change
what is trained (logging, launcher, paths, the stage list, evaluation settings), plus the code version,
so the same config and code find the same run and resume it, and changed code starts afresh.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import mmcompress
from mmcompress.errors import UserError
from mmcompress.versioning import code_version

SCHEMA_VERSION = 1
STATUSES = ("running", "complete", "failed", "interrupted")
# Top-level keys that do not change the trained model; they are left out of the run id.
RUN_ID_EXCLUDED = (
    "logger",
    "launcher",
    "paths",
    "run_dir",
    "stages",
    "eval",
    "benchmark",
    "train",
    "distributed",
    "device",
    "name",
)


def run_id(cfg: DictConfig) -> str:
    """A readable prefix plus a hash of everything that changes what the run trains."""
    content = OmegaConf.to_container(cfg, resolve=True)
    for key in RUN_ID_EXCLUDED:
        content.pop(key, None)
    content["choices"] = {k: v for k, v in content.get("choices", {}).items() if k not in RUN_ID_EXCLUDED}
    content["code_version"] = code_version()  # changed code never reuses a run made by other code
    digest = hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]
    choices = cfg.choices
    return f"{choices.get('encoder', 'enc')}_{choices.get('llm', 'llm')}_{choices.get('data', 'data')}_s{cfg.seed}-{digest}"


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def environment() -> dict[str, Any]:
    """Code and library versions, recorded in every summary."""
    import torch
    import transformers

    return {
        "git_sha": _git_sha(),
        "code_version": code_version(),
        "mmcompress": mmcompress.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _git_sha() -> str | None:
    source = Path(mmcompress.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class RunDir:
    """One run's directory: its config, logs, summary, checkpoints and evaluation outputs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def checkpoint(self, stage: str) -> Path:
        return self.path / "checkpoints" / stage

    def create(self, cfg: DictConfig, overrides: list[str]) -> None:
        """Make the directory and record the config; refuse to reuse a directory of another config."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UserError(
                f"cannot write the run directory {self.path} ({exc.strerror}); choose another with run_dir=... or paths.runs=..."
            ) from None
        config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        existing = self.path / "config.yaml"
        if existing.is_file():
            old = OmegaConf.load(existing)
            if run_id(old) != run_id(cfg):
                raise UserError(f"{self.path} holds a run of a different config; choose another run_dir")
        atomic_write(existing, config_yaml)
        atomic_write(self.path / "overrides.txt", "".join(f"{o}\n" for o in overrides))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for one training process: a second `train` of the same run (say, a rerun while
        the killed job's workers still live) is refused instead of writing the same files."""
        with (self.path / ".lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"another mmcompress process is training {self.path}; wait for it to end or stop it first"
                ) from None
            yield

    def config(self) -> DictConfig:
        path = self.path / "config.yaml"
        if not path.is_file():
            raise UserError(
                f"{self.path} is not a run directory (no config.yaml); give the directory `mmcompress train` printed"
            )
        return OmegaConf.load(path)

    def summary(self) -> dict[str, Any]:
        if not self.summary_path.is_file():
            return {}
        try:
            return json.loads(self.summary_path.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{self.summary_path} is corrupt; delete it and rerun the command") from None

    def update_summary(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into summary.json (dicts merge one level deep, so eval adds, never overwrites)."""
        summary = self.summary() or {"schema_version": SCHEMA_VERSION}
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(summary.get(key), dict):
                summary[key] = {**summary[key], **value}
            else:
                summary[key] = value
        if summary.get("status") not in (None, *STATUSES):
            raise ValueError(f"bad run status {summary['status']!r}")
        summary["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write(self.summary_path, json.dumps(summary, indent=2, sort_keys=False) + "\n")
        return summary

    def stage_complete(self, stage: str) -> bool:
        marker = self.checkpoint(stage) / "stage.json"
        return marker.is_file() and json.loads(marker.read_text()).get("status") == "complete"
