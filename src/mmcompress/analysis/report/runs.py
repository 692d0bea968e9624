"""Reading runs for reports: run directories (never W&B, never the network) and sweep entries that failed
before they had one, grouped into configurations that differ only by seed."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mmcompress.analysis.significance import Estimate
from mmcompress.errors import UserError
from mmcompress.rundir import RUN_ID_EXCLUDED

# Config keys that never define a configuration: bookkeeping, or how the run was launched and logged.
_NOT_CONFIG = (*RUN_ID_EXCLUDED, "choices", "seed")


@dataclass
class Run:
    """One run as the report sees it: a run directory, or a sweep entry that failed before it had one."""

    name: str
    status: str
    config: dict[str, Any] = field(default_factory=dict)  # flattened: "stage.finetune.lr" → 0.001
    seed: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    error: str | None = None
    overrides: list[str] = field(default_factory=list)

    def score(self, benchmark: str, split: str = "test") -> dict[str, Any] | None:
        key = "scores" if split == "test" else "val_scores"
        return self.summary.get(key, {}).get(benchmark)

    @property
    def code_version(self) -> str | None:
        return self.summary.get("env", {}).get("code_version")


@dataclass
class Group:
    """Runs with the same configuration apart from the seed."""

    key: tuple
    runs: list[Run]

    @property
    def complete(self) -> list[Run]:
        return [r for r in self.runs if r.status == "complete" and r.summary.get("scores")]

    def estimate(self, value) -> Estimate | None:
        """Mean, standard deviation (0 for one seed) and n of `value(run)` over the complete runs."""
        return Estimate.of(value(r) for r in self.complete)

    def stat(self, value) -> tuple[float, float] | None:
        """Mean and standard deviation of `value(run)` over the complete runs."""
        estimate = self.estimate(value)
        return None if estimate is None else (estimate.mean, estimate.std)


def collect(paths: list[Path]) -> list[Run]:
    """Every run under `paths`: run directories (with a config.yaml) and sweep entries without one."""
    runs: dict[str, Run] = {}
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise UserError(f"{root} does not exist; give run directories or sweep/experiment directories")
        configs = (
            [root / "config.yaml"] if (root / "config.yaml").is_file() else sorted(root.rglob("config.yaml"))
        )
        for config_path in configs:
            if config_path.parent.parent.name == "checkpoints" or "wandb" in config_path.parts:
                continue
            run = _read_run(config_path.parent)
            runs[str(run.path.resolve())] = run
        for sweep_file in (
            [root / "sweep.json"] if (root / "sweep.json").is_file() else root.rglob("sweep.json")
        ):
            for entry in json.loads(sweep_file.read_text())["runs"]:
                if entry.get("run_dir") and Path(entry["run_dir"]).resolve().as_posix() in runs:
                    continue
                if entry.get("run_dir") and (Path(entry["run_dir"]) / "config.yaml").is_file():
                    run = _read_run(Path(entry["run_dir"]))
                    runs[str(run.path.resolve())] = run
                    continue
                name = f"{sweep_file.parent.name}#{entry['index']}"
                config = _overrides_as_config(entry["overrides"])
                runs[name] = Run(
                    name=name,
                    status=entry.get("status") or "not run",
                    seed=config.get("seed"),
                    error=entry.get("error"),
                    overrides=entry["overrides"],
                    config={k: v for k, v in config.items() if k.split(".")[0] not in _NOT_CONFIG},
                )
    if not runs:
        raise UserError(
            f"no runs found under {', '.join(map(str, paths))}; give directories `mmcompress train` wrote"
        )
    return sorted(runs.values(), key=lambda r: r.name)


def _read_run(path: Path) -> Run:
    cfg = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=True)
    try:
        summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    except json.JSONDecodeError:
        summary = {"status": "failed", "error": "summary.json is corrupt"}
    status = summary.get("status", "incomplete")
    if status == "running" and not _recently_updated(path):
        status = "interrupted"  # a killed process never wrote its final status
    overrides = (path / "overrides.txt").read_text().split() if (path / "overrides.txt").is_file() else []
    flat = _flatten({k: v for k, v in cfg.items() if k not in _NOT_CONFIG})
    if cfg.get("init_from"):
        flat["init_from"] = _trained_model(Path(cfg["init_from"]))
    flat |= {
        f"{group}": option for group, option in cfg.get("choices", {}).items() if group not in _NOT_CONFIG
    }
    return Run(path.name, status, flat, cfg.get("seed"), summary, path, summary.get("error"), overrides)


def _trained_model(source: Path) -> str:
    """What an `init_from` run starts from, seed aside: runs evaluating seed 0's and seed 1's model of
    one configuration are one configuration."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(source / "config.yaml"), resolve=True)
    except OSError:
        return str(source)
    trained = {k: v for k, v in cfg.items() if k not in _NOT_CONFIG}
    return (
        "trained:" + hashlib.sha1(json.dumps(trained, sort_keys=True, default=str).encode()).hexdigest()[:8]
    )


def _recently_updated(path: Path, seconds: float = 600) -> bool:
    import time

    return any(
        time.time() - p.stat().st_mtime < seconds
        for p in (path / "metrics.jsonl", path / "summary.json")
        if p.exists()
    )


def _overrides_as_config(overrides: list[str]) -> dict[str, Any]:
    config = {}
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        config[key] = _parse_scalar(value)
    return config


def _parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= _flatten(value, f"{name}.")
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def varying_keys(runs: list[Run]) -> list[str]:
    """The config keys users changed (their overrides) whose values differ between the runs."""
    keys: list[str] = []
    for run in runs:
        for override in run.overrides:
            key = override.lstrip("+~").partition("=")[0]
            if key.split(".")[0] not in _NOT_CONFIG and key not in keys:
                keys.append(key)
    return [k for k in keys if len({json.dumps(r.config.get(k), default=str) for r in runs}) > 1]


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs whose whole config agrees apart from the seed form one group, in first-seen order."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        key = tuple(sorted((k, json.dumps(v, default=str)) for k, v in run.config.items()))
        groups[key].append(run)
    return [Group(key, members) for key, members in groups.items()]


def benchmarks(runs: list[Run]) -> list[str]:
    return sorted({b for r in runs for b in r.summary.get("scores", {})})


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which (cost, score) points no other point beats: no lower-or-equal cost with a higher-or-equal score
    (strictly better in one). Lower cost is better, higher score is better."""
    front = []
    for i, (cost, score) in enumerate(points):
        dominated = any(
            c <= cost and s >= score and (c < cost or s > score) for j, (c, s) in enumerate(points) if j != i
        )
        front.append(not dominated)
    return front


def ranked_on_val(groups: list[Group], benchmark: str) -> list[tuple[Group, Estimate]]:
    """Configurations with a validation score, best mean first (the test score is reported, never used)."""
    scored = [(g, g.estimate(lambda r: (r.score(benchmark, "val") or {}).get("overall"))) for g in groups]
    return sorted(((g, e) for g, e in scored if e is not None), key=lambda pair: -pair[1].mean)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest suffix that no other key shares: stage.finetune.lr → lr (or finetune.lr)."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if sum(k == suffix or k.endswith("." + suffix) for k in keys) == 1:
                break
        names[key] = suffix
    return names


def metrics_log(run: Run) -> list[dict]:
    path = run.path / "metrics.jsonl" if run.path else None
    if not path or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
