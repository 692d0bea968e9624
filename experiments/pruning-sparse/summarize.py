"""Summarise the redundant-world pruning experiment: the unpruned model's score and val curve, then each
pruning method at 11% and 5.5% of the tokens, training-free and trained with pruning, as result.md,
result.json and accuracy_vs_tokens.png.

The rules are analysis/significance.py's: mean ± std with n over seeds; the best method of a budget is
chosen on val and called best only when separated (> 2 SE, ≥ 3 seeds a side) from every other there, else
a tie; test is reported, never used to choose. "Kept" is each seed's pruned test score over the same seed's
reference, as mean ± std n: training-free, the unpruned model it prunes; trained with pruning, the control
(the same seed's finetune stage retrained as long without pruning), or the unpruned model without one.

    python summarize.py RECORD_DIR OUT_DIR [--allow-mixed-versions]

RECORD_DIR holds run directories (config.yaml, summary.json, metrics.jsonl) under one folder per phase:
sparse (unpruned), sparse-free (training-free), sparse-trained (finetune retrained with pruning, and the
control with pruning=none).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from mmcompress.analysis.report.runs import Run, collect
from mmcompress.analysis.significance import Estimate, separated, why_tied
from mmcompress.data.synthvqa import CATEGORIES

PHASES = {"sparse": "unpruned", "sparse-free": "training-free", "sparse-trained": "trained with pruning"}
BUDGETS = (0.11, 0.055)  # the 11% and 5.5% of the tokens
TARGETS = {0.11: 0.95, 0.055: 0.90}  # the issue's: the best method trained with pruning keeps this share
ADAPTIVE = "adaptive"  # the budget column of methods that choose their own count (PruMerge, PruMerge+)


def overall(run: Run, split: str = "test") -> float | None:
    return (run.score("synthvqa", split) or {}).get("overall")


def method_of(run: Run) -> tuple[str, float | str]:
    """(pruning method, budget): the ratio, 1.0 unpruned, or `adaptive` for an uncapped PruMerge."""
    name, ratio = run.config.get("pruning.name", "none"), run.config.get("pruning.ratio")
    if name == "none":
        return name, 1.0
    return name, ADAPTIVE if ratio is None else float(ratio)


def load(record: Path, allow_mixed_versions: bool = False) -> dict[str, list[Run]]:
    """Complete runs of each phase; refuses runs made at different code versions unless allowed."""
    phases: dict[str, list[Run]] = {}
    for phase in PHASES:
        if (record / phase).is_dir():
            phases[phase] = [r for r in collect([record / phase]) if r.status == "complete" and overall(r)]
    if "sparse" not in phases or not phases["sparse"]:
        sys.exit(f"error: no complete unpruned runs under {record / 'sparse'}; run ./run.sh first")
    versions = sorted({r.code_version for runs in phases.values() for r in runs})
    if len(versions) > 1 and not allow_mixed_versions:
        sys.exit(
            f"error: runs from code versions {', '.join(map(str, versions))}; rerun them at one version "
            "or pass --allow-mixed-versions"
        )
    return phases


def val_curve(runs: list[Run]) -> dict[int, Estimate]:
    """Finetune step → val overall over seeds, from each run's periodic val scores (train.val_every)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for entry in _metrics(run):
            if entry.get("stage") == "finetune" and "val/overall" in entry:
                by_step[int(entry["step"])].append(float(entry["val/overall"]))
    return {step: Estimate.of(values) for step, values in sorted(by_step.items())}


def _metrics(run: Run) -> list[dict]:
    path = run.path / "metrics.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


def convergence(curve: dict[int, Estimate]) -> dict:
    """Whether the val score was still rising at the end: the last check against the one before it."""
    steps = sorted(curve)
    if len(steps) < 2:
        return {"converged": None, "why": "fewer than two val checks (train.val_every)"}
    before, last = curve[steps[-2]], curve[steps[-1]]
    rising = last.mean > before.mean and separated(last, before)
    why = f"val at step {steps[-1]} {last.mean:.3f} vs step {steps[-2]} {before.mean:.3f}: " + (
        "still rising beyond 2 SE"
        if rising
        else "no rise"
        if last.mean <= before.mean
        else why_tied(last, before)
    )
    return {"converged": not rising, "why": why, "steps": steps[-2:]}


def methods(
    runs: list[Run], reference: dict[int, float], unpruned: dict[int, float]
) -> dict[tuple[str, float | str], dict]:
    """(method, budget) → val and test estimates, visual tokens, and the share kept of the reference's and
    of the unpruned model's test score."""
    groups: dict[tuple[str, float | str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[method_of(run)].append(run)
    rows = {}
    order = [*BUDGETS, ADAPTIVE]  # other ratios after these

    def position(key: tuple[str, float | str]) -> tuple:
        return (order.index(key[1]) if key[1] in order else len(order), str(key[1]), key[0])

    for key, members in sorted(groups.items(), key=lambda kv: position(kv[0])):
        rows[key] = {
            "val": Estimate.of(overall(r, "val") for r in members),
            "test": Estimate.of(overall(r) for r in members),
            "kept": Estimate.of(overall(r) / reference[r.seed] for r in members if reference.get(r.seed)),
            "of_unpruned": Estimate.of(
                overall(r) / unpruned[r.seed] for r in members if unpruned.get(r.seed)
            ),
            "tokens": Estimate.of(r.summary.get("visual_tokens", {}).get("mean") for r in members),
            "categories": {
                c: Estimate.of((r.score("synthvqa") or {}).get("categories", {}).get(c) for r in members)
                for c in CATEGORIES
            },
            "seeds": sorted(r.seed for r in members),
        }
    return rows


def best_on_val(rows: dict, budget: float) -> dict | None:
    """The method with the best val mean at `budget`, and whether it is separated from every other there."""
    at = {m: row for (m, b), row in rows.items() if b == budget and row["val"] is not None}
    if not at:
        return None
    best = max(at, key=lambda m: at[m]["val"].mean)
    ties = {
        m: why_tied(at[best]["val"], row["val"])
        for m, row in at.items()
        if m != best and not separated(at[best]["val"], row["val"])
    }
    return {"method": best, "separated": not ties if len(at) > 1 else None, "ties": ties}


def summarize(phases: dict[str, list[Run]]) -> dict:
    unpruned_runs = phases["sparse"]
    unpruned = {r.seed: overall(r) for r in unpruned_runs}
    result = {
        "code_versions": sorted({r.code_version for runs in phases.values() for r in runs}),
        "unpruned": {
            "test": Estimate.of(unpruned.values()),
            "val": Estimate.of(overall(r, "val") for r in unpruned_runs),
            "tokens": Estimate.of(r.summary.get("visual_tokens", {}).get("mean") for r in unpruned_runs),
            "categories": {
                c: Estimate.of(r.score("synthvqa")["categories"][c] for r in unpruned_runs)
                for c in CATEGORIES
            },
            "seeds": sorted(unpruned),
            "curve": val_curve(unpruned_runs),
            "blind": Estimate.of(
                (r.summary.get("baselines", {}).get("synthvqa") or {}).get("majority") for r in unpruned_runs
            ),
        },
    }
    result["unpruned"]["convergence"] = convergence(result["unpruned"]["curve"])
    controls = [r for r in phases.get("sparse-trained", []) if method_of(r)[0] == "none"]
    # Trained with pruning retrains the finetune stage with pruning; the control retrains it as long without
    # pruning, so "kept" compares equal training. Without a control, the unpruned model is the reference.
    reference = {r.seed: overall(r) for r in controls} or unpruned
    result["reference"] = "control" if controls else "unpruned"
    for phase, against in (("sparse-free", unpruned), ("sparse-trained", reference)):
        rows = methods(phases.get(phase, []), against, unpruned)
        result[phase] = {"rows": rows, "best": {b: best_on_val(rows, b) for b in BUDGETS}}
    control = result["sparse-trained"]["rows"].get(("none", 1.0))
    if control:  # the control against the unpruned model: what the shorter retraining alone costs
        control["kept"] = Estimate.of(overall(r) / unpruned[r.seed] for r in controls if unpruned.get(r.seed))
    trained = result["sparse-trained"]
    result["targets"] = {}
    for budget, target in TARGETS.items():
        best = trained["best"][budget]
        kept = trained["rows"][(best["method"], budget)]["kept"] if best else None
        result["targets"][budget] = {
            "target": target,
            "method": best and best["method"],
            "kept": kept,
            "of_unpruned": trained["rows"][(best["method"], budget)]["of_unpruned"] if best else None,
            "met": None if kept is None else kept.mean >= target,
        }
    return result


def _cell(estimate: Estimate | None, digits: int = 3) -> str:
    return "" if estimate is None else f"{estimate.mean:.{digits}f} ± {estimate.std:.{digits}f}"


def _pct(estimate: Estimate | None) -> str:
    return "" if estimate is None else f"{100 * estimate.mean:.1f}% ± {100 * estimate.std:.1f}"


def markdown(result: dict) -> str:
    u = result["unpruned"]
    lines = [
        f"Code version of every run: {', '.join(map(str, result['code_versions']))}.",
        "",
        f"**Unpruned** ({u['tokens'].mean:.0f} tokens), n = {u['test'].n} (seeds {u['seeds']}): test overall "
        f"**{_cell(u['test'])}**, val {_cell(u['val'])}; blind majority (the question alone) "
        f"{_cell(u['blind'])}.",
        "",
        "| " + " | ".join(CATEGORIES) + " |",
        "|---" * len(CATEGORIES) + "|",
        "| " + " | ".join(_cell(u["categories"][c]) for c in CATEGORIES) + " |",
        "",
        "Val overall during finetune (600 val questions per check, mean ± std over seeds): "
        + ", ".join(f"step {s}: {_cell(e)}" for s, e in u["curve"].items())
        + ".",
        f"Still rising at the last check: {not u['convergence']['converged']} ({u['convergence']['why']}).",
    ]
    reference = {
        "control": "the same seed's control (the finetune stage retrained as long, without pruning)",
        "unpruned": "the same seed's unpruned model",
    }
    for phase in ("sparse-free", "sparse-trained"):
        block = result[phase]
        if not block["rows"]:
            continue
        against = reference[result["reference"] if phase == "sparse-trained" else "unpruned"]
        lines += [
            "",
            f"**{PHASES[phase].capitalize()}** (best per budget chosen on val; kept = test / the test of "
            f"{against}):",
            "",
            "| method | budget | n | tokens | val overall | test overall | kept | of the unpruned model |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (method, budget), row in block["rows"].items():
            best = block["best"].get(budget)
            mark = ""
            if best and best["method"] == method:
                mark = {True: " **best**", False: " best (tie)", None: " (the only one)"}[best["separated"]]
            label = budget if budget == ADAPTIVE else f"{100 * budget:.1f}%"
            if method == "none":
                mark = " (the control; kept: against the unpruned model)"
            lines.append(
                f"| {method}{mark} | {label} | {row['test'].n} | {row['tokens'].mean:.1f} | "
                f"{_cell(row['val'])} | {_cell(row['test'])} | {_pct(row['kept'])} | "
                f"{_pct(row['of_unpruned'])} |"
            )
        for budget in BUDGETS:
            best = block["best"].get(budget)
            if best and best["separated"] is False:
                ties = "; ".join(f"{m}: {why}" for m, why in best["ties"].items())
                lines.append(
                    f"\n{100 * budget:.1f}%: {best['method']} has the best val mean but ties with {ties}."
                )
    lines.append("")
    for budget, target in result["targets"].items():
        if target["kept"] is None:
            continue
        verdict = "met" if target["met"] else "not met"
        lines.append(
            f"- Target at {100 * budget:.1f}%: the val-best method trained with pruning "
            f"({target['method']}) keeps {_pct(target['kept'])} (n = {target['kept'].n}) of the "
            f"{result['reference']}'s score and {_pct(target['of_unpruned'])} of the unpruned model's; target ≥ "
            f"{100 * target['target']:.0f}% of the {result['reference']}'s: **{verdict}**."
        )
    return "\n".join(lines) + "\n"


def to_json(value):
    """The result with estimates as {mean, std, n} and tuple keys as 'method@budget'."""
    if isinstance(value, Estimate):
        return {"mean": round(value.mean, 4), "std": round(value.std, 4), "n": value.n}
    if isinstance(value, dict):
        return {
            ("@".join(map(str, k)) if isinstance(k, tuple) else str(k)): to_json(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def plot(result: dict, path: Path) -> None:
    """Share of the unpruned score kept against visual tokens, each phase's methods with ±1 std bars."""
    from mmcompress.analysis.report.plots import pyplot, spread_labels

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.2), sharey=True)
    labels = []
    for ax, phase in zip(axes, ("sparse-free", "sparse-trained"), strict=True):
        by_method: dict[str, list] = defaultdict(list)
        for (method, _), row in result[phase]["rows"].items():
            if row["kept"] is not None:
                by_method[method].append((row["tokens"].mean, row["kept"].mean, row["kept"].std))
        for method, points in sorted(by_method.items()):
            points.sort()
            xs, ys, errs = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=method)
            labels.append(
                ax.annotate(
                    method, (xs[0], ys[0]), xytext=(4, 0), textcoords="offset points", fontsize=8, va="center"
                )
            )
        for budget, target in TARGETS.items():
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
            ax.text(
                0.01,
                target,
                f"target at {100 * budget:.1f}%",
                fontsize=8,
                color="grey",
                va="bottom",
                transform=ax.get_yaxis_transform(),
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        blind, base = result["unpruned"]["blind"], result["unpruned"]["test"]
        if phase == "sparse-trained" and ("none", 1.0) in result[phase]["rows"]:
            base = result[phase]["rows"][("none", 1.0)]["test"]  # the control
        if blind is not None:  # answering from the question alone, as a share of the reference's score
            ax.axhline(blind.mean / base.mean, color="grey", linestyle="--", linewidth=1)
            ax.text(0.99, blind.mean / base.mean, "blind (no image)", fontsize=8, color="grey", ha="right",
                    va="top", transform=ax.get_yaxis_transform())  # fmt: skip
        ax.set_xscale("log", base=2)
        ticks: list[int] = []
        for tick in sorted({round(x) for points in by_method.values() for x, _, _ in points}):
            if (
                not ticks or tick > 1.15 * ticks[-1]
            ):  # neighbours closer than that would print over each other
                ticks.append(tick)
        ax.set_xticks(ticks, [str(t) for t in ticks], minor=False)
        ax.minorticks_off()
        ax.set_xlabel("visual tokens per image (of 256)", fontsize=9)
        against = "the unpruned model" if phase == "sparse-free" else f"the {result['reference']}"
        ax.set_title(f"{PHASES[phase]} (reference: {against})", fontsize=10)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("test score kept (of the same seed's reference)", fontsize=9)
    fig.tight_layout()
    spread_labels(fig, labels)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--allow-mixed-versions", action="store_true")
    args = parser.parse_args(argv)
    result = summarize(load(args.record, args.allow_mixed_versions))
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    (args.out / "result.md").write_text(text)
    (args.out / "result.json").write_text(json.dumps(to_json(result), indent=1) + "\n")
    plot(result, args.out / "accuracy_vs_tokens.png")
    print(text)


if __name__ == "__main__":
    main()
