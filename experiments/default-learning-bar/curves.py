"""Plot val accuracy per category against finetune step, from runs made with `train.val_every=N`.

    python curves.py OUT.png LABEL=RUNS_DIR [LABEL=RUNS_DIR ...]

Each RUNS_DIR holds run directories (one per seed); each LABEL is one colour. Shows when each skill is
learned: existence late and abruptly, at a seed-dependent step, unless the LLM is initialised wide enough.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

from mmcompress.data.synthvqa import CATEGORIES

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(out: Path, families: list[tuple[str, Path]]) -> None:
    fig, axes = plt.subplots(1, len(CATEGORIES), figsize=(3 * len(CATEGORIES), 3.2), sharey=True)
    for colour, (label, root) in enumerate(families):
        for k, run in enumerate(sorted(root.glob("*/metrics.jsonl"))):
            rows = [json.loads(line) for line in run.read_text().splitlines()]
            val = [r for r in rows if r.get("stage") == "finetune" and "val/overall" in r]
            for ax, category in zip(axes, CATEGORIES, strict=True):
                ax.plot(
                    [r["step"] for r in val],
                    [r[f"val/{category}"] for r in val],
                    color=f"C{colour}",
                    marker=".",
                    alpha=0.8,
                    label=label if k == 0 else None,
                )
    for ax, category in zip(axes, CATEGORIES, strict=True):
        ax.set_title(category)
        ax.set_xlabel("finetune step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("val accuracy (one line per seed)")
    axes[-1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    pairs = [arg.split("=", 1) for arg in sys.argv[2:]]
    main(Path(sys.argv[1]), [(label, Path(path)) for label, path in pairs])
