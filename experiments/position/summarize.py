"""The position experiment's table: per arm (projector.positions and position_at), test accuracy per category
and the mean of the five other categories, mean ± std (n) over seeds, and each arm's difference from the arm
without positions with its 2-standard-error mark (analysis/significance.py). Val is printed beside test.

python summarize.py RUNS_DIR      # markdown on stdout
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mmcompress.analysis.significance import Estimate, separated, two_standard_errors
from mmcompress.data.synthvqa import CATEGORIES

OTHERS = [c for c in CATEGORIES if c != "position"]


NONE = "none"


def arm_of(projector) -> str:
    """'none', or '<positions> at <input|output>'."""
    positions = int(projector.get("positions") or 0)
    return f"{positions} at {projector.get('position_at') or 'input'}" if positions else NONE


def arms(root: Path) -> dict[str, list[dict]]:
    """Arm → the complete runs' summaries, the arm without positions first."""
    found: dict[str, list[dict]] = {}
    for summary_path in sorted(root.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        if summary.get("status") != "complete":
            continue
        cfg = OmegaConf.load(summary_path.parent / "config.yaml")
        found.setdefault(arm_of(cfg.projector), []).append(summary)
    return dict(sorted(found.items(), key=lambda item: (item[0] != NONE, item[0])))


def measures(summary: dict) -> dict[str, float]:
    test = summary["scores"]["synthvqa"]
    row = {c: test["categories"][c] for c in CATEGORIES}
    row["other five"] = sum(row[c] for c in OTHERS) / len(OTHERS)
    row["overall"] = test["overall"]
    row["val overall"] = summary["val_scores"]["synthvqa"]["overall"]
    return row


def table(found: dict[str, list[dict]]) -> str:
    columns = [*CATEGORIES, "other five", "overall", "val overall"]
    estimates = {
        arm: {c: Estimate.of(measures(s)[c] for s in runs) for c in columns} for arm, runs in found.items()
    }
    lines = ["| positions | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for arm, row in estimates.items():
        lines.append(f"| {arm} | " + " | ".join(row[c].text() for c in columns) + " |")
    base = estimates.get(NONE)
    for arm, row in estimates.items():
        if arm == NONE or base is None:
            continue
        cells = []
        for c in columns:
            delta = row[c].mean - base[c].mean
            mark = "**" if separated(row[c], base[c]) else ""
            cells.append(f"{mark}{delta:+.3f}{mark} (2 SE {two_standard_errors(row[c], base[c]):.3f})")
        lines.append(f"| {arm} − none | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nBold: the difference exceeds 2 standard errors with ≥ 3 seeds a side.\n"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py RUNS_DIR")
    found = arms(Path(sys.argv[1]))
    if not found:
        sys.exit(f"no complete runs under {sys.argv[1]}")
    print(table(found))


if __name__ == "__main__":
    main()
