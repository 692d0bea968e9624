"""The report's table: one row per configuration (mean ± std over n seeds), the best configuration selected
on val and reported on test — or a tie when it is not separated from the next (analysis/significance.py)
— and notes on unfinished runs. Runs of different code versions are refused unless allowed."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcompress.analysis.report.runs import (
    Group,
    Run,
    benchmarks,
    collect,
    group_runs,
    ranked_on_val,
    short_names,
    varying_keys,
)
from mmcompress.analysis.significance import separated, why_tied
from mmcompress.console import console
from mmcompress.errors import UserError


def fmt(stat: tuple[float, float] | None, digits: int = 3) -> str:
    if stat is None:
        return "—"
    mean, std = stat
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def config_label(group: Group, keys: list[str]) -> str:
    run, names = group.runs[0], short_names(keys)
    return " ".join(f"{names[k]}={short(run.config.get(k))}" for k in keys) or "default"


def short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def metric(run: Run, benchmark: str, *path: str, split: str = "test"):
    node: Any = run.score(benchmark, split) if path[0] in ("overall", "categories") else run.summary
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) else None


def gflops(run: Run) -> float | None:
    flops = run.summary.get("flops", {}).get("per_question")
    return flops / 1e9 if isinstance(flops, (int, float)) else None


@dataclass
class Report:
    runs: list[Run]
    keys: list[str]
    groups: list[Group]
    benchmark: str | None
    others: list[str] = field(default_factory=list)  # further benchmarks scored: one test column each

    @classmethod
    def build(cls, paths: list[Path], allow_mixed_versions: bool = False) -> Report:
        runs = collect(paths)
        trained_on = {r.config.get("data.name") for r in runs}
        names = sorted(benchmarks(runs), key=lambda b: b not in trained_on)  # the training data's split first
        report = cls(runs, varying_keys(runs), group_runs(runs), names[0] if names else None, names[1:])
        versions = report.code_versions()
        if len(versions) > 1 and not allow_mixed_versions:
            raise UserError(
                f"these runs come from {len(versions)} code versions ("
                + ", ".join(f"{v}: {n} runs" for v, n in versions.items())
                + "); rerun them at one version, or pass --allow-mixed-versions to compare them anyway"
            )
        return report

    def rows(self) -> list[dict[str, str]]:
        """One row per configuration: what varies, seeds, status, scores, visual tokens, FLOPs, time."""
        b = self.benchmark
        rows = []
        for g in self.groups:
            statuses = defaultdict(int)
            for r in g.runs:
                statuses[r.status] += 1
            names = short_names(self.keys)
            row = {names[k]: short(g.runs[0].config.get(k)) for k in self.keys}
            row |= {
                "seeds": ",".join(str(r.seed) for r in g.runs if r.seed is not None) or "—",
                "n": str(len(g.complete)),
                "status": " ".join(f"{n}×{s}" if n > 1 else s for s, n in statuses.items()),
                "val": fmt(g.stat(lambda r: metric(r, b, "overall", split="val"))) if b else "—",
                "test": fmt(g.stat(lambda r: metric(r, b, "overall"))) if b else "—",
                **{o: fmt(g.stat(lambda r, o=o: metric(r, o, "overall"))) for o in self.others},
                "majority": fmt(g.stat(lambda r: r.summary.get("baselines", {}).get(b, {}).get("majority"))),
                "visual tokens": fmt(g.stat(lambda r: metric(r, b, "visual_tokens", "mean")), 1),
                "GFLOPs": fmt(g.stat(lambda r: gflops(r)), 3),
                "time (s)": fmt(g.stat(lambda r: r.summary.get("wall_time_s")), 0),
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
        """The configuration with the highest mean val score, and its label."""
        ranked = ranked_on_val(self.groups, self.benchmark) if self.benchmark else []
        return (ranked[0][0], config_label(ranked[0][0], self.keys)) if ranked else None

    def selection(self) -> str | None:
        """The best configuration on val, with its test score — or the tie, when the configurations
        next to it are not separated from it."""
        ranked = ranked_on_val(self.groups, self.benchmark) if self.benchmark else []
        if not ranked:
            return None
        (group, val), label = ranked[0], config_label(ranked[0][0], self.keys)
        test = group.estimate(lambda r: metric(r, self.benchmark, "overall"))
        scores = f"val {val.text()}, test {test.text() if test else '—'}"
        tied = [(g, e) for g, e in ranked[1:] if not separated(val, e)]
        if len(ranked) == 1:
            return f"one configuration (selected on val, {self.benchmark}): {label} — {scores}"
        if not tied:
            runner, runner_val = ranked[1]
            return (
                f"best configuration (selected on val, {self.benchmark}): {label} — {scores}; ahead of the "
                f"next ({config_label(runner, self.keys)}, val {runner_val.text()}) by more than 2 SE"
            )
        first, first_val = tied[0]
        others = f" and {len(tied) - 1} more" if len(tied) > 1 else ""
        return (
            f"tie on val ({self.benchmark}): the top configuration {label} ({scores}) is not separated from "
            f"{config_label(first, self.keys)} (val {first_val.text()}: {why_tied(val, first_val)}){others}"
        )

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
        notes = [line for line in [self.selection()] if line]
        versions = self.code_versions()
        if len(versions) > 1:
            notes.append(
                "warning: these runs were made by different code versions ("
                + ", ".join(f"{v}: {n} runs" for v, n in versions.items())
                + "), compared because --allow-mixed-versions was given"
            )
        unfinished = [r for r in self.runs if r.status != "complete"]
        if unfinished:
            notes.append(
                f"{len(unfinished)} run(s) not complete: "
                + ", ".join(f"{r.name} ({r.status})" for r in unfinished)
            )
        return notes
