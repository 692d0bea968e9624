"""The report's plots: each returns a matplotlib figure, or None when the runs hold nothing to plot."""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict

from mmcompress.analysis.report.runs import metrics_log, pareto_front, short_names
from mmcompress.analysis.report.table import Report, config_label, metric, short
from mmcompress.errors import UserError


def plot_accuracy_vs_tokens(report: Report):
    """Test accuracy against visual tokens per configuration (mean ± std over seeds), Pareto front marked.

    With two or more varying keys, configurations sharing the first (e.g. the pruning method) form one
    line, each point labelled by the others (e.g. the ratio), on a log token axis when counts span 8×."""
    b = report.benchmark
    points = []
    for g in report.groups:
        tokens = g.stat(lambda r: metric(r, b, "visual_tokens", "mean"))
        score = g.stat(lambda r: metric(r, b, "overall"))
        if tokens and score:
            points.append((tokens, score, g))
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    keys = report.keys
    series_key, point_keys = (keys[0], keys[1:]) if len(keys) >= 2 else (None, keys)
    series: dict[str, list] = defaultdict(list)
    for point in points:
        name = short(point[2].runs[0].config.get(series_key)) if series_key else ""
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
            label = config_label(group, point_keys) if point_keys else ""
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
    plt = pyplot()
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
            label=config_label(g, report.keys),
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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    drawn = False
    for i, g in enumerate(report.groups):
        for j, run in enumerate(g.runs):
            rows = metrics_log(run)
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
                xs,
                ys,
                color=f"C{i % 10}",
                lw=1,
                alpha=0.8,
                label=config_label(g, report.keys) if j == 0 else None,
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
        score = g.stat(lambda r: metric(r, b, "overall"))
        if a and c:
            points.append((a[0], c[0], score[0] if score else math.nan, config_label(g, report.keys)))
    if not points:
        return None
    plt = pyplot()
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


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("the report's plots need matplotlib: pip install 'mmcompress[sweeps]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    pyplot().close(fig)
    return buffer.getvalue()
