"""The nano MLLM's learning curve from one run: val accuracy (overall and per category) and training loss
against the number of training samples seen, as the markdown table recorded in epoch/result.md and a plot.

Reads a run directory (or a copy of its metrics.jsonl, summary.json and config.yaml). Samples seen count
across stages in the order they ran: a record at step s of a stage has seen every sample of the stages before
it plus s × the stage's batch size; an epoch is synthvqa's train split (world.train_images × questions)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from mmcompress.data.synthvqa import CATEGORIES

PROBE = 0.46  # the throwaway probe quoted in the real-weights issue


@dataclass
class Curve:
    stage_starts: dict[str, int]  # samples seen when each training stage began
    epoch: int  # samples in one epoch of the train split
    val: list[dict]  # {"stage", "step", "samples", "overall", <category>...}
    loss: list[tuple[int, float]]  # (samples, training loss) as logged
    summary: dict


def load_curve(run: Path) -> Curve:
    cfg = OmegaConf.load(run / "config.yaml")
    summary = json.loads((run / "summary.json").read_text())
    starts, seen = {}, 0
    for stage in (s for s in cfg.stages if s in cfg.stage):
        starts[stage] = seen
        seen += cfg.stage[stage].steps * cfg.stage[stage].batch_size
    epoch = cfg.world.train_images * cfg.world.questions_per_image
    if cfg.data.max_train_samples:
        epoch = min(epoch, cfg.data.max_train_samples)
    val, loss = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("stage") not in starts:
            continue
        samples = starts[record["stage"]] + record["step"] * cfg.stage[record["stage"]].batch_size
        if "val/overall" in record:
            scores = {k.removeprefix("val/"): v for k, v in record.items() if k.startswith("val/")}
            val.append({"stage": record["stage"], "step": record["step"], "samples": samples, **scores})
        if "loss" in record:
            loss.append((samples, record["loss"]))
    return Curve(starts, epoch, val, loss, summary)


def table(curve: Curve) -> list[str]:
    """One row per val measurement, then the run's final scores on the full val and test splits."""
    header = ["stage", "step", "samples", "epochs", *CATEGORIES, "overall"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for point in curve.val:
        cells = [f"{point[c]:.2f}" for c in CATEGORIES] + [f"**{point['overall']:.3f}**"]
        epochs = point["samples"] / curve.epoch
        lines.append(
            f"| {point['stage']} | {point['step']} | {point['samples']:,} | {epochs:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    total = sum(s["steps"] for s in curve.summary["stages"].values())
    for split, key in (("val, whole split", "val_scores"), ("test, whole split", "scores")):
        scores = curve.summary[key]["synthvqa"]
        cells = [f"{scores['categories'][c]:.3f}" for c in CATEGORIES]
        lines.append(
            f"| final {split} | {total} steps | | | "
            + " | ".join(cells)
            + f" | **{scores['overall']:.3f}** |"
        )
    return lines


def yes_ratios(curve: Curve) -> str:
    """How often the final model answers "yes" to the yes/no categories: at chance, "always yes" is the tell."""
    splits = curve.summary["scores"]["synthvqa"]["yes_no"]["splits"]
    ratios = ", ".join(f"{name} {split['yes_ratio']:.2f}" for name, split in splits.items())
    return f"Share of yes answers on the test split's yes/no questions: {ratios}."


def plot(curve: Curve, out: Path) -> None:
    """Left: val accuracy against samples seen (overall bold, each category thin), the blind baseline and the
    probe's 0.46, stage boundaries and the final test score. Right: the logged training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4), dpi=110, width_ratios=(3, 2))
    xs = [p["samples"] for p in curve.val]
    for category in CATEGORIES:
        acc.plot(xs, [p[category] for p in curve.val], lw=1, alpha=0.8, label=category)
    acc.plot(
        xs, [p["overall"] for p in curve.val], lw=2.5, color="black", marker="o", ms=3, label="overall (val)"
    )
    test = curve.summary["scores"]["synthvqa"]["overall"]
    acc.scatter(
        [xs[-1]], [test], marker="*", s=160, color="black", zorder=4, label=f"overall (test) {test:.3f}"
    )
    blind = curve.summary["baselines"]["synthvqa"]["majority"]
    acc.axhline(blind, color="grey", ls="--", lw=1, label=f"blind majority {blind:.3f}")
    acc.axhline(PROBE, color="red", ls=":", lw=1, label=f"probe's {PROBE}")
    for stage, start in curve.stage_starts.items():
        if start:
            acc.axvline(start, color="grey", lw=0.8)
            acc.text(start, 0.02, f" {stage} →", fontsize=8, va="bottom", transform=acc.get_xaxis_transform())
    acc.set_ylim(0, 1)
    acc.set_xlabel("training samples seen")
    acc.set_ylabel("val accuracy (first 300 questions)")
    acc.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    top = acc.secondary_xaxis("top", functions=(lambda s: s / curve.epoch, lambda e: e * curve.epoch))
    top.set_xlabel("epochs", fontsize=8)
    top.tick_params(labelsize=8)
    loss.plot(*zip(*curve.loss, strict=True), lw=1, color="tab:blue")
    loss.set_yscale("log")
    thousands = matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k")
    for axis in (acc, loss):
        axis.xaxis.set_major_formatter(thousands)
    loss.set_xlabel("training samples seen")
    loss.set_ylabel("training loss (answer tokens)")
    for start in curve.stage_starts.values():
        if start:
            loss.axvline(start, color="grey", lw=0.8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(run: Path, figure: Path | None = None) -> None:
    curve = load_curve(run)
    if not curve.val:
        raise SystemExit(f"{run} has no val measurements: train with train.val_every=N")
    print("\n".join([*table(curve), "", yes_ratios(curve)]))
    if figure is not None:
        plot(curve, figure)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
