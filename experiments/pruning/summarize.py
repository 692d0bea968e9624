"""The pruning experiment's table and accuracy-vs-tokens plot, from its runs (read with mmcompress.analysis.report).

Rows: methods; columns: budgets as fractions and token counts; cells: test overall accuracy, mean ± std
over seeds (adaptive methods at their natural count). Training-free rows evaluate the unpruned models;
"trained" rows used the method in align and finetune too. States the best method per budget, chosen on
val (a tie unless separated by analysis/significance.py's rule), and how far each falls from the unpruned
test score.

python summarize.py RUNS_DIR OUT_DIR      # writes OUT_DIR/result.md, result.json, accuracy_vs_tokens.png
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from mmcompress.analysis.report.runs import collect, group_runs
from mmcompress.analysis.significance import separated

BUDGETS = (1.0, 0.5, 0.25, 0.11, 0.055)
FIXED = ("random", "spatial", "topk", "tome")
ADAPTIVE = ("prumerge", "prumerge_plus")
BENCHMARK = "synthvqa"


def stats(group, *path) -> tuple[float, float] | None:
    values = []
    for run in group.complete:
        node = run.summary
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, (int, float)):
            values.append(float(node))
    if not values:
        return None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def entries(runs_dir: Path, part: str) -> list[dict]:
    """One entry per configuration: method, ratio, tokens, accuracy (mean, std), seeds, prefill FLOPs ratio."""
    out = []
    for group in group_runs(collect([runs_dir / part])):
        config = group.runs[0].config
        accuracy = stats(group, "scores", BENCHMARK, "overall")
        if accuracy is None:
            continue
        out.append(
            {
                "method": config.get("pruning"),
                "ratio": config.get("pruning.ratio"),
                "importance": config.get("pruning.importance"),
                "tokens": stats(group, "visual_tokens", "mean"),
                "accuracy": accuracy,
                "val": group.estimate(lambda r: (r.score(BENCHMARK, "val") or {}).get("overall")),
                "categories": {
                    c: stats(group, "scores", BENCHMARK, "categories", c)[0]
                    for c in group.complete[0].summary["scores"][BENCHMARK]["categories"]
                },
                "flops_ratio": stats(group, "llm_prefill_flops", "ratio"),
                "seeds": sorted(r.seed for r in group.complete),
            }
        )
    return out


def cell(entry: dict | None) -> str:
    if entry is None:
        return "—"
    (mean, std), tokens = entry["accuracy"], entry["tokens"][0]
    return f"{mean:.3f} ± {std:.3f} ({tokens:.0f})"


def main() -> None:
    runs_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    free = entries(runs_dir, "pruning-free")
    trained, signals = (
        entries(runs_dir, part) if (runs_dir / part).is_dir() else []
        for part in ("pruning-trained", "pruning-signals")
    )
    full = next(e for e in free if e["method"] == "none")
    base = full["accuracy"][0]
    tokens = round(full["tokens"][0])
    header = ["method"] + [f"{r:.1%} ({max(1, round(r * tokens))})" for r in BUDGETS[1:]]
    lines = [
        f"Unpruned (100%, {tokens} tokens): test overall {base:.3f} ± {full['accuracy'][1]:.3f}, seeds {full['seeds']}.",
        "",
        "Training-free (pruning applied at evaluation on the unpruned model); test overall, mean ± std over "
        "seeds (mean visual tokens):",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for method in FIXED:
        row = [
            next((e for e in free if e["method"] == method and e["ratio"] == r), None) for r in BUDGETS[1:]
        ]
        lines.append(f"| {method} | " + " | ".join(cell(e) for e in row) + " |")
    for method in ADAPTIVE:
        entry = next(e for e in free if e["method"] == method)
        lines.append(f"| {method} (adaptive) | {cell(entry)} | | | |")
    lines += [
        "",
        "Best training-free method per budget, chosen on val and called best only when separated from every "
        "other there (analysis/significance.py); test reported (adaptive methods at the nearest budget):",
        "",
    ]
    best = {}
    for ratio in BUDGETS[1:]:
        near = [e for e in free if e["ratio"] == ratio and e["method"] in FIXED]
        near += [
            e for e in free if e["method"] in ADAPTIVE
            and min(BUDGETS[1:], key=lambda r: abs(r * tokens - e["tokens"][0])) == ratio
        ]  # fmt: skip
        near = [e for e in near if e["val"] is not None]
        if not near:
            continue
        winner = max(near, key=lambda e: e["val"].mean)
        best[ratio] = winner
        ties = [e["method"] for e in near if e is not winner and not separated(winner["val"], e["val"])]
        verdict = (
            f"**{winner['method']}**" if not ties else f"{winner['method']} (tie with {', '.join(ties)})"
        )
        lines.append(
            f"- {ratio:.1%}: {verdict}, val {winner['val'].text()}, test {winner['accuracy'][0]:.3f} "
            f"({winner['accuracy'][0] - base:+.3f} from unpruned; "
            + ", ".join(
                f"{e['method']} {e['accuracy'][0] - base:+.3f}"
                for e in sorted(near, key=lambda e: -e["accuracy"][0])[1:]
            )
            + ")"
        )
    if trained:
        lines += ["", "Applied during training as well (align and finetune with pruning):", ""]
        lines += [
            "| method | ratio | test overall | tokens | training-free at the same budget |",
            "|---|---|---|---|---|",
        ]
        for e in sorted(trained, key=lambda e: (e["method"], -(e["ratio"] or 0))):
            twin = next((f for f in free if f["method"] == e["method"] and f["ratio"] == e["ratio"]), None)
            twin = twin or next((f for f in free if f["method"] == e["method"]), None)
            lines.append(
                f"| {e['method']} | {e['ratio']} | {e['accuracy'][0]:.3f} ± {e['accuracy'][1]:.3f} | "
                f"{e['tokens'][0]:.1f} | {cell(twin)} |"
            )
    if signals:
        lines += [
            "",
            "Top-k by each importance signal, training-free (CLS attention is the default for CLIP):",
            "",
        ]
        lines += ["| importance | 11% | 5.5% |", "|---|---|---|"]
        for kind in ("cls", "distinct", "norm"):
            pool = free if kind == "cls" else [e for e in signals if e["importance"] == kind]
            row = [
                next((e for e in pool if e["method"] == "topk" and e["ratio"] == r), None)
                for r in (0.11, 0.055)
            ]
            lines.append(f"| {kind} | " + " | ".join(cell(e) for e in row) + " |")
    (out / "result.md").write_text("\n".join(lines) + "\n")
    payload = {"training_free": free, "trained": trained, "signals": signals}
    (out / "result.json").write_text(json.dumps(payload, indent=2, default=vars) + "\n")

    figure, ax = plt.subplots(figsize=(9.5, 4.8))
    for i, method in enumerate(FIXED + ADAPTIVE):
        points = sorted((e for e in free if e["method"] in (method, "none") and (e["method"] == method or method in FIXED)),
                        key=lambda e: e["tokens"][0])  # fmt: skip
        if method in ADAPTIVE:
            points = [e for e in points if e["method"] == method]
        ax.errorbar(
            [e["tokens"][0] for e in points], [e["accuracy"][0] for e in points],
            yerr=[e["accuracy"][1] for e in points], fmt="o-" if method in FIXED else "D", ms=5, lw=1,
            capsize=2, color=f"C{i}", label=f"{method} (training-free)",
        )  # fmt: skip
        mine = sorted((e for e in trained if e["method"] == method), key=lambda e: e["tokens"][0])
        if mine:
            ax.errorbar(
                [e["tokens"][0] for e in mine], [e["accuracy"][0] for e in mine],
                yerr=[e["accuracy"][1] for e in mine], fmt="*--", ms=10, lw=1, capsize=2, color=f"C{i}",
                label=f"{method} (trained with it)",
            )  # fmt: skip
    ax.axhline(base, color="black", lw=0.8, ls=":", label=f"unpruned ({tokens} tokens)")
    majority = statistics.mean(
        r.summary["baselines"][BENCHMARK]["majority"]
        for r in collect([runs_dir / "pruning-free"])
        if r.summary.get("baselines")
    )
    ax.axhline(majority, color="grey", lw=0.8, ls="--", label="blind majority")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(
        [max(1, round(r * tokens)) for r in BUDGETS], [str(max(1, round(r * tokens))) for r in BUDGETS]
    )
    ax.set_xlabel("visual tokens fed to the LLM per image (mean; log scale)")
    ax.set_ylabel(f"{BENCHMARK} test accuracy (overall)")
    ax.set_title("Pruning a 16×16 mini CLIP: accuracy against visual tokens (2 seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "accuracy_vs_tokens.png", dpi=120)
    print((out / "result.md").read_text())


if __name__ == "__main__":
    main()
