"""The report's plots: each returns a matplotlib figure, or None when the runs hold nothing to plot.

Every figure is at most `MAX_WIDTH` inches wide, so report.html shows it at its own size (no shrinking),
with no text under `MIN_FONT` points and point labels moved apart until none overlap."""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict

from mmcompress.analysis.report.runs import metrics_log, pareto_front, short_names
from mmcompress.analysis.report.table import Report, config_label, metric, short
from mmcompress.errors import UserError

MAX_WIDTH = 9.5  # inches: 1045 px at the PNGs' 110 dpi, inside report.html's 1200 px column
MIN_FONT = 8  # points
DPI = 110


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
    if len({round(t[0], 1) for t, _, _ in points}) == 1:  # one token count: a token axis says nothing
        return _accuracy_at_one_budget(plt, report, points)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    keys = report.keys
    series_key, point_keys = (keys[0], keys[1:]) if len(keys) >= 2 else (None, keys)
    series: dict[str, list] = defaultdict(list)
    anchors: dict[tuple[float, str], float] = {}  # (tokens, label) → the score it is drawn at
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
            if point_keys:  # one label per text and token count, by its highest point
                key = (round(tokens[0], 1), config_label(group, point_keys))
                anchors[key] = max(anchors.get(key, score[0]), score[0])
    labels = [_point_label(ax, text, (tokens, score)) for (tokens, text), score in anchors.items()]
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
            ax.set_xticks(ticks, [str(t) for t in ticks])
    majority = statistics.mean(
        r.summary["baselines"][b]["majority"] for g in report.groups for r in g.complete
    )
    ax.axhline(majority, color="grey", ls="--", lw=0.8, label="blind majority")
    ax.set_xlabel("visual tokens per image (mean)")
    ax.set_ylabel(f"{b} test accuracy (overall)")
    ax.set_title("accuracy against visual tokens")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    spread_labels(fig, labels)
    return fig


def _accuracy_at_one_budget(plt, report: Report, points: list):
    """Every configuration feeds the same number of tokens: one row each, best on top, mean ± std."""
    points = sorted(points, key=lambda p: p[1][0])
    fig, ax = plt.subplots(figsize=(MAX_WIDTH, 1.6 + 0.36 * len(points)))
    ys = range(len(points))
    ax.errorbar([s[0] for _, s, _ in points], ys, xerr=[s[1] for _, s, _ in points], fmt="o", ms=5, capsize=3)
    ax.set_yticks(ys, [config_label(g, report.keys) for _, _, g in points])
    b = report.benchmark
    majority = statistics.mean(
        r.summary["baselines"][b]["majority"] for g in report.groups for r in g.complete
    )
    ax.axvline(majority, color="grey", ls="--", lw=0.8, label="blind majority")
    ax.set_xlabel(f"{b} test accuracy (overall, mean ± std over seeds)")
    ax.set_ylabel("configuration")
    ax.set_title(f"accuracy at {round(points[0][0][0])} visual tokens per image")
    ax.legend(loc="best")
    ax.grid(alpha=0.3, axis="x")
    return fig


def plot_categories(report: Report):
    """Per-category test accuracy of every configuration with the blind baseline: grouped bars for up to
    four configurations, else a table-like heatmap (bars for more would be too narrow to read)."""
    b = report.benchmark
    groups = [g for g in report.groups if g.complete]
    if not groups:
        return None
    categories = sorted(groups[0].complete[0].score(b)["categories"])
    majority = groups[0].complete[0].summary["baselines"][b]["categories"]
    stats = [
        [g.stat(lambda r, c=c: r.score(b)["categories"].get(c)) or (math.nan, 0) for c in categories]
        for g in groups
    ]
    plt = pyplot()
    if len(groups) > 4:
        return _category_heatmap(
            plt, report, groups, categories, stats, [majority[c]["majority"] for c in categories]
        )
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH, 3 + 1.1 * len(categories)), 4.8))
    width = 0.8 / len(groups)
    for i, (g, row) in enumerate(zip(groups, stats, strict=True)):
        xs = [k + (i - (len(groups) - 1) / 2) * width for k in range(len(categories))]
        ax.bar(
            xs,
            [s[0] for s in row],
            width,
            yerr=[s[1] for s in row],
            capsize=2,
            label=config_label(g, report.keys),
        )
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
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    ax.grid(alpha=0.3, axis="y")
    return fig


def _category_heatmap(plt, report: Report, groups, categories, stats, majority):
    """Configurations × categories, each cell its mean test accuracy; the blind baseline as the last row."""
    means = [[s[0] for s in row] for row in stats] + [majority]
    names = [config_label(g, report.keys) for g in groups] + ["blind majority"]
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH, 3.5 + 1.0 * len(categories)), 1.4 + 0.38 * len(names)))
    shown = ax.imshow(means, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(means):
        for j, value in enumerate(row):
            if not math.isnan(value):
                ax.text(
                    j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black"
                )
    ax.set_xticks(range(len(categories)), categories)
    ax.set_yticks(range(len(names)), names)
    ax.axhline(len(names) - 1.5, color="white", lw=2)  # the baseline row apart
    ax.set_xlabel("question category")
    ax.set_ylabel("configuration")
    ax.set_title(f"{report.benchmark} test accuracy per category (mean over seeds)")
    fig.colorbar(shown, ax=ax, label="accuracy", fraction=0.04)
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
    ax.yaxis.set_minor_formatter(plt.NullFormatter())  # minor labels collide with the major ones
    ax.set_title("training curves")
    ax.legend()
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
    labels = [_point_label(ax, label, (a, c)) for a, c, _, label in points]
    fig.colorbar(shown, label=f"{b} test accuracy")
    ax.set_xlabel("A score (alignment with the reference)")
    ax.set_ylabel("C score (correspondence, PCK)")
    ax.set_title("AC scores")
    ax.grid(alpha=0.3)
    spread_labels(fig, labels)
    return fig


def _point_label(ax, text: str, xy: tuple[float, float]):
    """A label next to a data point, joined to it by a thin line once `spread_labels` moves it away."""
    return ax.annotate(
        text,
        xy,
        textcoords="offset points",
        xytext=(4, 4),
        arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "grey", "shrinkA": 0, "shrinkB": 2},
    )


def spread_labels(fig, labels: list, gap: float = 1.0, rounds: int = 100) -> None:
    """Move point labels down, in the figure's final layout, until no two overlap (`gap` points apart)."""
    if len(labels) < 2:
        return
    fig.tight_layout()
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    per_point = fig.dpi / 72

    def box(label):  # the text's own box: an annotation's extent also covers its (growing) leader line
        return Text.get_window_extent(label, renderer)

    for _ in range(rounds):
        boxes = [box(label) for label in labels]
        order = sorted(range(len(labels)), key=lambda i: (-boxes[i].y1, boxes[i].x0))  # top first
        moved = False
        for rank, i in enumerate(order):
            for j in order[rank + 1 :]:
                if boxes[i].overlaps(boxes[j]):
                    x, y = labels[j].xyann
                    labels[j].xyann = (x, y - (boxes[j].y1 - boxes[i].y0) / per_point - gap)
                    boxes[j] = box(labels[j])
                    moved = True
        if not moved:
            return


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

    plt.rcParams.update({"font.size": 9, "legend.fontsize": MIN_FONT, "xtick.labelsize": MIN_FONT,
                         "ytick.labelsize": MIN_FONT, "figure.dpi": DPI})  # fmt: skip
    return plt


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    pyplot().close(fig)
    return buffer.getvalue()
