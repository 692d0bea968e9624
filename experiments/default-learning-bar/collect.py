"""Summarise the default experiment's runs (one per seed) as the markdown table recorded in result.md: each
seed, the blind baseline, each category's mean margin over it, overall as mean ± std (n), and the code
version the runs were made at."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from mmcompress.analysis.significance import Estimate
from mmcompress.data.synthvqa import CATEGORIES


def table(root: Path) -> str:
    summaries = sorted(
        (json.loads(p.read_text()) for p in root.glob("*/summary.json")), key=lambda s: s["run_id"]
    )
    runs = [s for s in summaries if s.get("status") == "complete"]
    if not runs:
        sys.exit(f"error: no complete runs under {root}; run ./run.sh first")
    lines = [
        "| seed | " + " | ".join(CATEGORIES) + " | overall | blind majority | margin | wall time |",
        "|---" * (len(CATEGORIES) + 5) + "|",
    ]
    for s in runs:
        sc, bl = s["scores"]["synthvqa"], s["baselines"]["synthvqa"]
        cells = [f"{sc['categories'][c]:.3f}" for c in CATEGORIES]
        seed = s["run_id"].split("_s")[-1].split("-")[0]
        lines.append(
            f"| {seed} | " + " | ".join(cells) + f" | **{sc['overall']:.3f}** | {bl['majority']:.3f} | "
            f"{sc['overall'] - bl['majority']:+.3f} | {s['wall_time_s']:.0f} s |"
        )

    def mean(value) -> float:
        return statistics.mean(value(s) for s in runs)

    majority = {c: runs[0]["baselines"]["synthvqa"]["categories"][c]["majority"] for c in CATEGORIES}
    overall = Estimate.of(s["scores"]["synthvqa"]["overall"] for s in runs)
    margins = [
        mean(lambda s, c=c: s["scores"]["synthvqa"]["categories"][c]) - majority[c] for c in CATEGORIES
    ]
    blind = mean(lambda s: s["baselines"]["synthvqa"]["majority"])
    lines += [
        "| blind majority | " + " | ".join(f"{majority[c]:.3f}" for c in CATEGORIES) + " | | | | |",
        "| mean margin | "
        + " | ".join(f"{m:+.3f}" for m in margins)
        + f" | **{overall.text()}** | {blind:.3f} | {overall.mean - blind:+.3f} | |",
        "",
        "Code version: " + ", ".join(sorted({s["env"]["code_version"] for s in runs})) + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(Path(sys.argv[1])), end="")
