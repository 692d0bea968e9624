"""Which importance signal finds the tokens that matter, for each mini expert (the choice for experts
without a [CLS] token, measured).

For every val image of the synthetic world we know which grid cells an item (object or word) covers —
the cells every question is about. Each signal ranks an expert's grid tokens; we keep the top 25% / 11%
and measure the recall of item cells (the fraction of them kept) and the precision (the fraction of kept
tokens that show an item). Random ranking is the reference: its recall equals the budget.

python measure.py OUT_DIR      # writes OUT_DIR/result.md, result.json and signals.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image

from mmcompress.config import load_config
from mmcompress.data.world import world_dir
from mmcompress.model.build import load_experts
from mmcompress.model.multimodal import encode_expert
from mmcompress.pruning.plan import budget, rank_descending
from mmcompress.training.mini_experts.cache import expert_sources
from mmcompress.training.mini_experts.scenes import WorldScenes
from mmcompress.vision.signals import SignalSpec

EXPERTS = {  # label → encoder option and grid
    "clip (8×8)": ("clip", [8, 8]),
    "convnext (8×8)": ("convnext", [8, 8]),
    "sam (16×16 → 8×8)": ("sam", [8, 8]),
    "pix2struct (8×8)": ("pix2struct", [8, 8]),
    "clip-16x16 (16×16)": ("clip-16x16", [16, 16]),
}
BUDGETS = (0.25, 0.11)
CHUNK = 250


@torch.no_grad()
def importance(expert, scenes: WorldScenes, kind: str) -> torch.Tensor:
    """(n, N) importance of every val image's grid tokens under `kind` (random: uniform noise)."""
    parts = []
    for lo in range(0, len(scenes), CHUNK):
        images = [Image.open(p).convert("RGB") for p in scenes.paths[lo : lo + CHUNK]]
        inputs = expert.preprocess(images)
        if kind == "random":
            parts.append(torch.rand(len(images), expert.grid[0] * expert.grid[1]))
        else:
            parts.append(encode_expert(expert, inputs, SignalSpec(importance=kind)).importance)
    return torch.cat(parts)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    results = {}
    for label, (option, grid) in EXPERTS.items():
        cfg = load_config([f"encoder={option}", f"grid={grid}"])
        family = next(iter(cfg.encoder.experts))
        sources = expert_sources(cfg)
        expert = load_experts(cfg, lambda name, _, sources=sources: sources[name])[family].eval()
        scenes = WorldScenes(world_dir(cfg), "val")
        labels = scenes.patch_labels(tuple(grid), ("color", "word"))
        covered = (labels["color"] > 0) | (labels["word"] > 0)  # (n, N) cells an item covers
        kinds = (["cls"] if expert.summary_query else []) + ["distinct", "norm", "random"]
        results[label] = {"item_cell_fraction": round(covered.float().mean().item(), 3)}
        for kind in kinds:
            rank = rank_descending(importance(expert, scenes, kind))
            for ratio in BUDGETS:
                kept = rank < budget(rank.shape[1], ratio)  # (n, N)
                hits = (kept & covered).sum(1).float()
                results[label][f"{kind} recall@{ratio:.0%}"] = round(
                    (hits / covered.sum(1).clamp(min=1)).mean().item(), 3
                )
                results[label][f"{kind} precision@{ratio:.0%}"] = round((hits / kept.sum(1)).mean().item(), 3)
        print(label, results[label], flush=True)
    (out / "result.json").write_text(json.dumps(results, indent=2) + "\n")
    kinds = ("cls", "distinct", "norm", "random")
    lines = ["| expert | item cells | " + " | ".join(f"{k} recall@25% / @11%" for k in kinds) + " |"]
    lines.append("|---" * (len(kinds) + 2) + "|")
    for label, r in results.items():
        cells = [
            f"{r[f'{k} recall@25%']:.3f} / {r[f'{k} recall@11%']:.3f}" if f"{k} recall@25%" in r else "—"
            for k in kinds
        ]
        lines.append(f"| {label} | {r['item_cell_fraction']:.3f} | " + " | ".join(cells) + " |")
    (out / "result.md").write_text("\n".join(lines) + "\n")
    figure, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        values = [r.get(f"{kind} recall@25%", 0) for r in results.values()]
        ax.bar([j + i * width for j in range(len(results))], values, width, label=kind)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(results))], list(results), fontsize=8)
    ax.set_ylabel("item cells kept at 25% (recall)")
    ax.set_ylim(0, 1.15)
    ax.legend(ncols=4, fontsize=8, loc="upper center")
    ax.set_title("Which signal keeps the tokens that show objects and words (val)")
    figure.tight_layout()
    figure.savefig(out / "signals.png", dpi=110)
    print((out / "result.md").read_text())


if __name__ == "__main__":
    main()
