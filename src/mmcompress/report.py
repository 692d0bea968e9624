"""`mmcompress report`: read run directories (never W&B, never the network) into tables and plots.

Runs that differ only by seed are one configuration, shown as mean ± std over its complete seeds; failed
and unfinished runs are listed as such, never dropped. When the report names a best configuration it
selects on the validation split and reports the test split.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mmcompress.console import console
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

    def stat(self, value) -> tuple[float, float] | None:
        """Mean and standard deviation (0 for one seed) of `value(run)` over the complete runs."""
        values = [v for v in (value(r) for r in self.complete) if v is not None]
        if not values:
            return None
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# ------------------------------------------------------------------------------------------------------------
# Reading runs


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


# ------------------------------------------------------------------------------------------------------------
# Organising runs


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


def best_group(groups: list[Group], benchmark: str) -> Group | None:
    """The configuration with the highest mean validation score (the test score is reported, not used)."""
    scored = [(g.stat(lambda r: (r.score(benchmark, "val") or {}).get("overall")), g) for g in groups]
    scored = [(s[0], g) for s, g in scored if s is not None]
    return max(scored, key=lambda x: x[0])[1] if scored else None


def _fmt(stat: tuple[float, float] | None, digits: int = 3) -> str:
    if stat is None:
        return "—"
    mean, std = stat
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


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


def _label(group: Group, keys: list[str]) -> str:
    run, names = group.runs[0], short_names(keys)
    return " ".join(f"{names[k]}={_short(run.config.get(k))}" for k in keys) or "default"


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _metric(run: Run, benchmark: str, *path: str, split: str = "test"):
    node: Any = run.score(benchmark, split) if path[0] in ("overall", "categories") else run.summary
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) else None


# ------------------------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    runs: list[Run]
    keys: list[str]
    groups: list[Group]
    benchmark: str | None
    others: list[str] = field(default_factory=list)  # further benchmarks scored: one test column each

    @classmethod
    def build(cls, paths: list[Path]) -> Report:
        runs = collect(paths)
        trained_on = {r.config.get("data.name") for r in runs}
        names = sorted(benchmarks(runs), key=lambda b: b not in trained_on)  # the training data's split first
        return cls(runs, varying_keys(runs), group_runs(runs), names[0] if names else None, names[1:])

    def rows(self) -> list[dict[str, str]]:
        """One row per configuration: what varies, seeds, status, scores, visual tokens, FLOPs, time."""
        b = self.benchmark
        rows = []
        for g in self.groups:
            statuses = defaultdict(int)
            for r in g.runs:
                statuses[r.status] += 1
            names = short_names(self.keys)
            row = {names[k]: _short(g.runs[0].config.get(k)) for k in self.keys}
            row |= {
                "seeds": ",".join(str(r.seed) for r in g.runs if r.seed is not None) or "—",
                "status": " ".join(f"{n}×{s}" if n > 1 else s for s, n in statuses.items()),
                "val": _fmt(g.stat(lambda r: _metric(r, b, "overall", split="val"))) if b else "—",
                "test": _fmt(g.stat(lambda r: _metric(r, b, "overall"))) if b else "—",
                **{o: _fmt(g.stat(lambda r, o=o: _metric(r, o, "overall"))) for o in self.others},
                "majority": _fmt(g.stat(lambda r: r.summary.get("baselines", {}).get(b, {}).get("majority"))),
                "visual tokens": _fmt(g.stat(lambda r: _metric(r, b, "visual_tokens", "mean")), 1),
                "GFLOPs": _fmt(g.stat(lambda r: _gflops(r)), 3),
                "time (s)": _fmt(g.stat(lambda r: r.summary.get("wall_time_s")), 0),
            }
            errors = sorted({r.error for r in g.runs if r.status in ("failed", "invalid") and r.error})
            row["error"] = "; ".join(errors)
            rows.append(row)
        return rows

    def code_versions(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for r in self.runs:
            if r.code_version:
                counts[r.code_version] += 1
        return dict(counts)

    def best(self) -> tuple[Group, str] | None:
        if not self.benchmark:
            return None
        group = best_group(self.groups, self.benchmark)
        return (group, _label(group, self.keys)) if group else None

    def print(self) -> None:
        from rich.table import Table

        rows = self.rows()
        table = Table(
            title=f"{len(self.runs)} runs · {len(self.groups)} configurations · {self.benchmark or 'no scores'}"
        )
        for column in rows[0]:
            table.add_column(column, overflow="fold")
        for row in rows:
            style = (
                "red" if "failed" in row["status"] else ("yellow" if "complete" not in row["status"] else "")
            )
            table.add_row(*row.values(), style=style)
        console.print(table)
        for line in self.notes():
            console.print(line, highlight=False)

    def notes(self) -> list[str]:
        notes = []
        best = self.best()
        if best:
            group, label = best
            val = group.stat(lambda r: _metric(r, self.benchmark, "overall", split="val"))
            test = group.stat(lambda r: _metric(r, self.benchmark, "overall"))
            notes.append(
                f"best configuration (selected on val, {self.benchmark}): {label} — val {_fmt(val)}, test {_fmt(test)}"
            )
        versions = self.code_versions()
        if len(versions) > 1:
            notes.append(
                "warning: these runs were made by different code versions ("
                + ", ".join(f"{v}: {n} runs" for v, n in versions.items())
                + "); compare them with care"
            )
        unfinished = [r for r in self.runs if r.status != "complete"]
        if unfinished:
            notes.append(
                f"{len(unfinished)} run(s) not complete: "
                + ", ".join(f"{r.name} ({r.status})" for r in unfinished)
            )
        return notes


def _gflops(run: Run) -> float | None:
    flops = run.summary.get("flops", {}).get("per_question")
    return flops / 1e9 if isinstance(flops, (int, float)) else None


# ------------------------------------------------------------------------------------------------------------
# Plots: each returns a matplotlib figure, or None when the runs hold nothing to plot


def plot_accuracy_vs_tokens(report: Report):
    """Test accuracy against visual tokens per configuration (mean ± std over seeds), Pareto front marked.

    With two or more varying keys, configurations sharing the first (e.g. the pruning method) form one
    line, each point labelled by the others (e.g. the ratio), on a log token axis when counts span 8×."""
    b = report.benchmark
    points = []
    for g in report.groups:
        tokens = g.stat(lambda r: _metric(r, b, "visual_tokens", "mean"))
        score = g.stat(lambda r: _metric(r, b, "overall"))
        if tokens and score:
            points.append((tokens, score, g))
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    keys = report.keys
    series_key, point_keys = (keys[0], keys[1:]) if len(keys) >= 2 else (None, keys)
    series: dict[str, list] = defaultdict(list)
    for point in points:
        name = _short(point[2].runs[0].config.get(series_key)) if series_key else ""
        series[name].append(point)
    for i, (name, members) in enumerate(series.items()):
        members.sort(key=lambda p: p[0][0])
        ax.errorbar(
            [t[0] for t, _, _ in members],
            [s[0] for _, s, _ in members],
            xerr=[t[1] for t, _, _ in members],
            yerr=[s[1] for _, s, _ in members],
            fmt="o-" if series_key else "o",
            ms=4,
            lw=1,
            capsize=2,
            color=f"C{i % 10}",
            label=f"{short_names(keys)[series_key]}={name}" if series_key else None,
        )
        for tokens, score, group in members:
            label = _label(group, point_keys) if point_keys else ""
            ax.annotate(label, (tokens[0], score[0]), textcoords="offset points", xytext=(3, 3), fontsize=6)
    front = pareto_front([(t[0], s[0]) for t, s, _ in points])
    frontier = sorted((t[0], s[0]) for (t, s, _), f in zip(points, front, strict=True) if f)
    ax.step(
        [x for x, _ in frontier],
        [y for _, y in frontier],
        where="post",
        color="black",
        lw=0.8,
        alpha=0.6,
        label="Pareto front",
    )
    counts = [t[0] for t, _, _ in points]
    if max(counts) >= 8 * min(counts):
        ax.set_xscale("log")
        ax.minorticks_off()
        ticks = sorted({round(c) for c in counts})
        if len(ticks) <= 10:  # the token counts themselves, not powers of ten
            ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
    majority = statistics.mean(
        r.summary["baselines"][b]["majority"] for g in report.groups for r in g.complete
    )
    ax.axhline(majority, color="grey", ls="--", lw=0.8, label="blind majority")
    ax.set_xlabel("visual tokens per image (mean)")
    ax.set_ylabel(f"{b} test accuracy (overall)")
    ax.set_title("accuracy against visual tokens")
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def plot_categories(report: Report):
    """Per-category test accuracy of every configuration, as grouped bars with the blind baseline."""
    b = report.benchmark
    groups = [g for g in report.groups if g.complete]
    if not groups:
        return None
    categories = sorted(groups[0].complete[0].score(b)["categories"])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(categories) * max(1, len(groups)) / 2), 4.5))
    width = 0.8 / len(groups)
    for i, g in enumerate(groups):
        stats = [g.stat(lambda r, c=c: r.score(b)["categories"].get(c)) or (math.nan, 0) for c in categories]
        xs = [k + (i - (len(groups) - 1) / 2) * width for k in range(len(categories))]
        ax.bar(
            xs,
            [s[0] for s in stats],
            width,
            yerr=[s[1] for s in stats],
            capsize=2,
            label=_label(g, report.keys),
        )
    majority = groups[0].complete[0].summary["baselines"][b]["categories"]
    ax.scatter(
        range(len(categories)),
        [majority[c]["majority"] for c in categories],
        marker="_",
        s=400,
        color="black",
        zorder=3,
        label="blind majority",
    )
    ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel("question category")
    ax.set_ylabel(f"{b} test accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("accuracy per category")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_training_curves(report: Report):
    """Training loss against step through all stages (stages laid end to end), one line per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    drawn = False
    for i, g in enumerate(report.groups):
        for j, run in enumerate(g.runs):
            rows = _metrics(run)
            if not rows:
                continue
            offset, last, xs, ys = 0, {}, [], []
            for row in rows:
                if "loss" not in row:
                    continue
                stage = row["stage"]
                if stage not in last:
                    offset += max(last.values(), default=0) if last else 0
                    last = {stage: 0} | {k: v for k, v in last.items()}
                last[stage] = row["step"]
                xs.append(offset + row["step"])
                ys.append(row["loss"])
            ax.plot(
                xs, ys, color=f"C{i % 10}", lw=1, alpha=0.8, label=_label(g, report.keys) if j == 0 else None
            )
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step (prealign → align → finetune)")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_yscale("log")
    ax.set_title("training curves")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def plot_ac_scatter(report: Report):
    """A score against C score per configuration, coloured by test accuracy (runs scored by `mmcompress ac`)."""
    b = report.benchmark
    points = []
    for g in report.groups:
        a = g.stat(lambda r: r.summary.get("ac", {}).get("a"))
        c = g.stat(lambda r: r.summary.get("ac", {}).get("c"))
        score = g.stat(lambda r: _metric(r, b, "overall"))
        if a and c:
            points.append((a[0], c[0], score[0] if score else math.nan, _label(g, report.keys)))
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    shown = ax.scatter(
        [p[0] for p in points], [p[1] for p in points], c=[p[2] for p in points], cmap="viridis", s=40
    )
    for a, c, _, label in points:
        ax.annotate(label, (a, c), textcoords="offset points", xytext=(4, 4), fontsize=7)
    fig.colorbar(shown, label=f"{b} test accuracy")
    ax.set_xlabel("A score (alignment with the reference)")
    ax.set_ylabel("C score (correspondence, PCK)")
    ax.set_title("AC scores")
    ax.grid(alpha=0.3)
    return fig


PLOTS = {
    "accuracy_vs_tokens": plot_accuracy_vs_tokens,
    "categories": plot_categories,
    "training_curves": plot_training_curves,
    "ac_scatter": plot_ac_scatter,
}


def _metrics(run: Run) -> list[dict]:
    path = run.path / "metrics.jsonl" if run.path else None
    if not path or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("the report's plots need matplotlib: pip install 'mmcompress[sweeps]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------
# Writing


def write(report: Report, out: Path) -> dict[str, Path]:
    """report.md, a self-contained report.html, runs.csv (one row per run, failed ones too) and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    written = {"csv": out / "runs.csv"}
    _write_csv(report, written["csv"])
    images = {}
    for name, plot in PLOTS.items():
        fig = plot(report) if report.benchmark or name == "training_curves" else None
        if fig is not None:
            png = _png(fig)
            images[name] = png
            written[name] = out / f"{name}.png"
            written[name].write_bytes(png)
    rows = report.rows()
    notes = report.notes()
    md = ["# mmcompress report", "", *[f"- {n}" for n in notes], "", _markdown_table(rows), ""]
    md += [_markdown_table(_category_rows(report)), ""] if report.benchmark else []
    md += [f"![{name}]({name}.png)\n" for name in images]
    written["md"] = out / "report.md"
    written["md"].write_text("\n".join(md))
    written["html"] = out / "report.html"
    written["html"].write_text(_html(rows, _category_rows(report) if report.benchmark else [], notes, images))
    return written


def _category_rows(report: Report) -> list[dict[str, str]]:
    b = report.benchmark
    rows = []
    for g in report.groups:
        if not g.complete:
            continue
        categories = sorted(g.complete[0].score(b)["categories"])
        row = {"configuration": _label(g, report.keys)}
        row |= {c: _fmt(g.stat(lambda r, c=c: r.score(b)["categories"].get(c))) for c in categories}
        rows.append(row)
    return rows


def _write_csv(report: Report, path: Path) -> None:
    b = report.benchmark
    categories = (
        sorted({c for r in report.runs for c in ((r.score(b) or {}).get("categories") or {})}) if b else []
    )
    columns = ["run", "status", "error", *report.keys, "seed", "val_overall", "test_overall"]
    columns += [f"test_{c}" for c in categories] + [
        "majority",
        "visual_tokens",
        "gflops",
        "wall_time_s",
        "code_version",
        "path",
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in report.runs:
            test = r.score(b) or {} if b else {}
            writer.writerow(
                {
                    "run": r.name,
                    "status": r.status,
                    "error": r.error or "",
                    **{k: r.config.get(k, "") for k in report.keys},
                    "seed": r.seed if r.seed is not None else "",
                    "val_overall": (r.score(b, "val") or {}).get("overall", "") if b else "",
                    "test_overall": test.get("overall", ""),
                    **{f"test_{c}": test.get("categories", {}).get(c, "") for c in categories},
                    "majority": r.summary.get("baselines", {}).get(b, {}).get("majority", "") if b else "",
                    "visual_tokens": r.summary.get("visual_tokens", {}).get("mean", ""),
                    "gflops": _gflops(r) or "",
                    "wall_time_s": r.summary.get("wall_time_s", ""),
                    "code_version": r.code_version or "",
                    "path": str(r.path or ""),
                }
            )


def _markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[h]).replace("|", "\\|") for h in header) + " |" for row in rows]
    return "\n".join(lines)


def _html(rows, category_rows, notes, images) -> str:
    def table(rows):
        if not rows:
            return ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
        body = "".join(
            f"<tr class='{'failed' if 'failed' in row.get('status', '') else ''}'>"
            + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values())
            + "</tr>"
            for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    figures = "".join(
        f"<figure><img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{name.replace('_', ' ')}</figcaption></figure>"
        for name, png in images.items()
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
        "tr.failed td{color:#b00}img{max-width:100%}figure{display:inline-block;margin:1em}"
    )
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>mmcompress report</title><style>{style}</style>"
        f"</head><body><h1>mmcompress report</h1><ul>{items}</ul>{table(rows)}<h2>Per category (test)</h2>"
        f"{table(category_rows)}{figures}</body></html>\n"
    )


def log_to_wandb(report: Report, written: dict[str, Path], project: str) -> None:
    """Mirror the report to W&B as one run of job type `report`: the table and the plots."""
    import wandb

    from mmcompress.tracking import wandb_mode

    run = wandb.init(
        project=project, job_type="report", mode=wandb_mode("auto"), dir=str(written["md"].parent)
    )
    try:
        rows = report.rows()
        run.log({"report/runs": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])})
        run.log(
            {
                f"report/{name}": wandb.Image(str(path))
                for name, path in written.items()
                if path.suffix == ".png"
            }
        )
    finally:
        run.finish()
