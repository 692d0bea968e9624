"""Summarise the default experiment's runs (one per seed) as the markdown table recorded in result.md."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from mmcompress.data.synthvqa import CATEGORIES


def main(root: Path) -> None:
    summaries = sorted(
        (json.loads(p.read_text()) for p in root.glob("*/summary.json")), key=lambda s: s["run_id"]
    )
    runs = [s for s in summaries if s.get("status") == "complete"]
    print("| seed | " + " | ".join(CATEGORIES) + " | overall | blind majority | margin | wall time |")
    print("|---" * (len(CATEGORIES) + 5) + "|")
    for s in runs:
        sc, bl = s["scores"]["synthvqa"], s["baselines"]["synthvqa"]
        cells = [f"{sc['categories'][c]:.3f}" for c in CATEGORIES]
        seed = s["run_id"].split("_s")[-1].split("-")[0]
        print(
            f"| {seed} | " + " | ".join(cells) + f" | **{sc['overall']:.3f}** | {bl['majority']:.3f} | "
            f"{sc['overall'] - bl['majority']:+.3f} | {s['wall_time_s']:.0f} s |"
        )
    mean = lambda f: statistics.mean(f(s) for s in runs)  # noqa: E731
    majority = {c: runs[0]["baselines"]["synthvqa"]["categories"][c]["majority"] for c in CATEGORIES}
    print("| blind majority | " + " | ".join(f"{majority[c]:.3f}" for c in CATEGORIES) + " | | | | |")
    print(
        "| mean margin | "
        + " | ".join(
            f"{mean(lambda s, c=c: s['scores']['synthvqa']['categories'][c]) - majority[c]:+.3f}"
            for c in CATEGORIES
        )
        + f" | **{mean(lambda s: s['scores']['synthvqa']['overall']):.3f}** | {mean(lambda s: s['baselines']['synthvqa']['majority']):.3f} | "
        f"{mean(lambda s: s['scores']['synthvqa']['overall'] - s['baselines']['synthvqa']['majority']):+.3f} | |"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
