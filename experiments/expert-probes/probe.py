"""Linear probes on each mini expert's frozen features on the common grid: what each expert is good at.

For every expert, the features the MLLM receives (on the common grid, as stored by the feature store) are
probed with linear classifiers fitted on the train split and scored on val: per grid cell, the colour,
shape and word of the item covering it (cells covered by an item only; the colour, shape and text question
categories), and per image, from the mean token, the number of objects (the count category).

python probe.py OUT_DIR [world=hires ...]     # writes OUT_DIR/result.md, result.json and probes.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from mmcompress.analysis.probes import linear_probe_accuracy
from mmcompress.config import load_config
from mmcompress.data.world import world_dir
from mmcompress.model.build import load_experts
from mmcompress.model.features import split_features
from mmcompress.training.mini_experts.cache import expert_sources
from mmcompress.training.mini_experts.scenes import WorldScenes

FAMILIES = ("clip", "convnext", "sam", "pix2struct")
ALL = "all four (concat)"
PROBES = ("color", "shape", "word", "count")


def expert_features(family: str, overrides: list[str]) -> tuple[dict, list[int]]:
    """One expert's grid features per split, (n, N, C), with the scenes they show, and the grid."""
    cfg = load_config([f"encoder={family}", *overrides])
    sources = expert_sources(cfg)
    expert = load_experts(cfg, lambda name, _: sources[name])[family]
    data = {}
    for split in ("train", "val"):
        scenes = WorldScenes(world_dir(cfg), split)
        paths = [str(p) for p in scenes.paths]
        features = split_features({family: expert}, paths, cfg, torch.device("cpu"), f"{family} {split}")
        data[split] = (scenes, features[family].tokens.float())  # (n, N, C)
    return data, list(expert.grid)


def probe(data: dict, grid: list[int]) -> dict[str, float]:
    """Per-cell colour, shape and word (cells an item covers) and per-image count (from the mean token)."""
    scores = {}
    for kind in ("color", "shape", "word"):
        xs, ys = [], []
        for split in ("train", "val"):
            scenes, tokens = data[split]
            labels = scenes.patch_labels(grid, (kind,))[kind]  # (n, N)
            covered = labels > 0
            xs.append(tokens[covered])
            ys.append(labels[covered])
        scores[kind] = linear_probe_accuracy(xs[0], ys[0], xs[1], ys[1], data["train"][0].classes[kind])
    pooled = {split: tokens.mean(1) for split, (_, tokens) in data.items()}  # (n, C)
    counts = {split: scenes.object_count for split, (scenes, _) in data.items()}
    scores["count"] = linear_probe_accuracy(pooled["train"], counts["train"], pooled["val"], counts["val"], 8)
    return {k: round(v, 3) for k, v in scores.items()}


def main() -> None:
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    out.mkdir(parents=True, exist_ok=True)
    features = {family: expert_features(family, overrides) for family in FAMILIES}
    grids = {tuple(grid) for _, grid in features.values()}
    if len(grids) > 1:
        sys.exit(f"the experts' grids differ ({sorted(grids)}); give a common one, e.g. grid=[8,8]")
    results = {family: probe(data, grid) for family, (data, grid) in features.items()}
    # What fusion=concat hands the LLM: every expert's channels side by side on each cell.
    concat = {
        split: (features["clip"][0][split][0], torch.cat([d[split][1] for d, _ in features.values()], -1))
        for split in ("train", "val")
    }  # (n, N, ΣC)
    results[ALL] = probe(concat, features["clip"][1])
    (out / "result.json").write_text(json.dumps({"overrides": overrides, "probes": results}, indent=2))
    lines = ["| expert | " + " | ".join(PROBES) + " |", "|---" * (len(PROBES) + 1) + "|"]
    lines += [f"| {f} | " + " | ".join(f"{results[f][p]:.3f}" for p in PROBES) + " |" for f in results]
    (out / "result.md").write_text("\n".join(lines) + "\n")
    figure, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(results)
    for i, family in enumerate(results):
        ax.bar(
            [j + i * width for j in range(len(PROBES))],
            [results[family][p] for p in PROBES],
            width,
            label=family,
        )
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(PROBES))],
        ["colour (cell)", "shape (cell)", "word (cell)", "count (image)"],
    )
    ax.set_ylabel("linear-probe accuracy (val)")
    ax.set_xlabel("what the probe reads from the expert's grid features")
    ax.set_ylim(0, 1.3)  # room for the legend above the bars
    ax.legend(ncols=3, fontsize=8, loc="upper center")
    ax.set_title(
        "What each mini expert's features encode" + (f" ({' '.join(overrides)})" if overrides else "")
    )
    figure.tight_layout()
    figure.savefig(out / "probes.png", dpi=110)
    print((out / "result.md").read_text())


if __name__ == "__main__":
    main()
