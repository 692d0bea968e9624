"""Summarise the nano MLLM's runs as the markdown recorded in result.md: per arm (its experts), every
category as mean ± std over seeds with n, val overall, training time, and the references the issue names.

An arm differs from another only when the gap in test overall exceeds two standard errors of the difference;
arms with fewer than 3 seeds are listed but never compared."""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from mmcompress.analysis import significance
from mmcompress.analysis.significance import MIN_SEEDS, Estimate
from mmcompress.data.synthvqa import CATEGORIES

TINY_DEFAULT = 0.892  # experiments/default-learning-bar: mean of 3 seeds (mini CLIP → tiny Llama, 3 minutes)
PROBE = 0.46  # the throwaway probe quoted in the real-weights issue (13 min of bf16 training, best case)


def load_runs(root: Path) -> dict[str, list[dict]]:
    """Complete runs under `root` (run directories, or a folder of copied summaries `<run id>.json`), grouped
    by arm: the run's experts joined by '+' (e.g. dinov2+clip)."""
    arms: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(root.glob("**/summary.json")) or sorted(root.glob("*.json")):
        summary = json.loads(path.read_text())
        if summary.get("status") == "complete":
            arms["+".join(summary["experts"])].append(summary)
    return dict(arms)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def cell(values: list[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def training_minutes(summary: dict) -> float:
    return sum(stage["wall_time_s"] for stage in summary["stages"].values()) / 60


def separated(a: list[float], b: list[float]) -> bool | None:
    """analysis/significance.py's rule on two arms' seeds (None: fewer than 3 seeds on a side)."""
    if min(len(a), len(b)) < MIN_SEEDS:
        return None
    return significance.separated(Estimate.of(a), Estimate.of(b))


def table(arms: dict[str, list[dict]]) -> list[str]:
    header = ["arm", "n", *CATEGORIES, "test overall", "val overall", "training", "code version"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for arm, runs in arms.items():
        scores = [r["scores"]["synthvqa"] for r in runs]
        val = [r["val_scores"]["synthvqa"]["overall"] for r in runs if "val_scores" in r]
        versions = sorted({r["env"]["code_version"][:10] for r in runs})
        row = [
            arm,
            str(len(runs)),
            *(cell([s["categories"][c] for s in scores]) for c in CATEGORIES),
            f"**{cell([s['overall'] for s in scores])}**",
            cell(val) if val else "—",
            cell([training_minutes(r) for r in runs], digits=1) + " min",
            ", ".join(versions),
        ]
        lines.append("| " + " | ".join(row) + " |")
    runs = next(iter(arms.values()))
    majority = runs[0]["baselines"]["synthvqa"]
    blind = [f"{majority['categories'][c]['majority']:.3f}" for c in CATEGORIES]
    lines.append("| blind majority | | " + " | ".join(blind) + f" | {majority['majority']:.3f} | | | |")
    return lines


def comparisons(arms: dict[str, list[dict]]) -> list[str]:
    overall = {arm: [r["scores"]["synthvqa"]["overall"] for r in runs] for arm, runs in arms.items()}
    lines = []
    names = list(overall)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            verdict = separated(overall[a], overall[b])
            gap = statistics.mean(overall[a]) - statistics.mean(overall[b])
            text = {None: "not compared (fewer than 3 seeds)", True: "separated", False: "tie"}[verdict]
            lines.append(f"- {a} − {b}: {gap:+.3f} test overall: {text}")
    for arm, values in overall.items():
        if len(values) >= MIN_SEEDS:
            mean, std = mean_std(values)
            above = mean - 2 * std / math.sqrt(len(values)) > PROBE
            lines.append(
                f"- {arm} vs the probe's {PROBE}: {mean - PROBE:+.3f}"
                f" ({'above by more than 2 standard errors' if above else 'not clearly above'});"
                f" vs the tiny default's {TINY_DEFAULT}: {mean - TINY_DEFAULT:+.3f}"
            )
    return lines


def plot(arms: dict[str, list[dict]], out: Path) -> None:
    """Per-category test accuracy, one bar per arm (mean, whiskers ± std over seeds), blind majority as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*CATEGORIES, "overall"]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=120)
    width = 0.8 / len(arms)
    for i, (arm, runs) in enumerate(arms.items()):
        values = [[_score(r, c) for r in runs] for c in columns]
        means, stds = zip(*(mean_std(v) for v in values), strict=True)
        xs = [j + (i - (len(arms) - 1) / 2) * width for j in range(len(columns))]
        stds = [0 if math.isnan(s) else s for s in stds]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=f"{arm} (n={len(runs)})")
    blind = next(iter(arms.values()))[0]["baselines"]["synthvqa"]
    majority = [blind["categories"][c]["majority"] for c in CATEGORIES] + [blind["majority"]]
    ax.scatter(
        range(len(columns)), majority, marker="_", s=600, color="black", label="blind majority", zorder=3
    )
    overall = len(columns) - 1
    ax.hlines(PROBE, overall - 0.45, overall + 0.45, colors="red", linestyles=":", label=f"probe's {PROBE}")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    minutes = statistics.mean(training_minutes(r) for runs in arms.values() for r in runs)
    ax.set_title(f"nano MLLM on synthvqa after {minutes:.0f} minutes of CPU training", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", ncols=len(arms) + 2, frameon=False)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _score(summary: dict, column: str) -> float:
    scores = summary["scores"]["synthvqa"]
    return scores["overall"] if column == "overall" else scores["categories"][column]


def main(root: Path, figure: Path | None = None) -> None:
    arms = load_runs(root)
    if not arms:
        raise SystemExit(f"no complete runs under {root}")
    print("\n".join([*table(arms), "", *comparisons(arms)]))
    if figure is not None:
        plot(arms, figure)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
