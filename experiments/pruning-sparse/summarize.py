"""Summarise the redundant-world pruning experiment: the unpruned model's score, its val curve and whether a
schedule twice as long still raises it, then each pruning method at 11% and 5.5% of the tokens,
training-free and trained with pruning, as result.md, result.json and accuracy_vs_tokens.png.

The rules are analysis/significance.py's: mean ± std with n over seeds; the best method of a budget is
chosen on val and called best only when separated (> 2 SE, ≥ 3 seeds a side) from every other there, else
a tie; test is reported, never used to choose. "Kept" is each seed's pruned test score over the same seed's
reference, as mean ± std n: training-free and trained over the whole finetune, the unpruned model (the
same aligned model, the same finetune schedule); retrained, the control (the same seed's finetune stage
retrained as long without pruning).

    python summarize.py RECORD_DIR OUT_DIR [--allow-mixed-versions]

RECORD_DIR holds run directories (config.yaml, summary.json, metrics.jsonl) under one folder per phase:
sparse (unpruned), sparse-long (unpruned, the finetune twice as long), sparse-free (training-free),
sparse-pruned-full (the whole finetune trained with pruning from the aligned model) and sparse-trained
(the finetune retrained briefly with pruning, and its control with pruning=none).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from mmcompress.analysis.report.runs import Run, collect
from mmcompress.analysis.significance import Estimate, separated, two_standard_errors, why_tied
from mmcompress.data.synthvqa import CATEGORIES

PHASES = {
    "sparse": "unpruned",
    "sparse-long": "unpruned, finetune twice as long",
    "sparse-free": "training-free",
    "sparse-pruned-full": "trained with pruning (the whole finetune)",
    "sparse-trained": "retrained with pruning (a short finetune)",
}
PRUNED = ("sparse-free", "sparse-pruned-full", "sparse-trained")  # the phases with pruning, in table order
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
    return {
        "converged": not _rising(last, before),
        "why": f"val at step {steps[-1]} {last.mean:.3f} vs step {steps[-2]} {before.mean:.3f}: "
        + _verdict(last, before),
        "steps": steps[-2:],
    }


def doubling(short: list[Run], long: list[Run]) -> dict:
    """Whether a finetune twice as long ends with a higher val score beyond the noise. This is the test a
    warmup-stable-decay schedule needs: its decay lifts the last check of any length, so the curve within
    one run always ends rising."""
    before, after = (Estimate.of(overall(r, "val") for r in runs) for runs in (short, long))
    if before is None or after is None:
        return {"converged": None, "why": "no run with the finetune twice as long (sparse-long)"}
    steps = [sorted({r.config.get("stage.finetune.steps") for r in runs}) for runs in (short, long)]
    return {
        "converged": not _rising(after, before),
        "why": f"final val {after.mean:.3f} after {steps[1]} finetune steps vs {before.mean:.3f} after "
        f"{steps[0]}: " + _verdict(after, before),
        "steps": steps,
    }


def _rising(later: Estimate, earlier: Estimate) -> bool:
    return later.mean > earlier.mean and separated(later, earlier)


def _verdict(later: Estimate, earlier: Estimate) -> str:
    if _rising(later, earlier):
        return "still rising beyond 2 SE"
    return "no rise" if later.mean <= earlier.mean else why_tied(later, earlier)


def methods(
    runs: list[Run], reference: dict[int, float], baselines: dict[str, dict[int, float]]
) -> dict[tuple[str, float | str], dict]:
    """(method, budget) → val and test estimates, visual tokens, the share kept of the reference's test
    score, and the share of each baseline's ("of_unpruned", "of_long"), each paired by seed."""
    groups: dict[tuple[str, float | str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[method_of(run)].append(run)
    order = [*BUDGETS, ADAPTIVE]  # other ratios after these

    def position(key: tuple[str, float | str]) -> tuple:
        return (order.index(key[1]) if key[1] in order else len(order), str(key[1]), key[0])

    def share(members: list[Run], of: dict[int, float]) -> Estimate | None:
        return Estimate.of(overall(r) / of[r.seed] for r in members if of.get(r.seed))

    rows = {}
    for key, members in sorted(groups.items(), key=lambda kv: position(kv[0])):
        rows[key] = {
            "val": Estimate.of(overall(r, "val") for r in members),
            "test": Estimate.of(overall(r) for r in members),
            "kept": share(members, reference),
            **{f"of_{name}": share(members, scores) for name, scores in baselines.items()},
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


def compare(a: Estimate, b: Estimate) -> dict:
    """a − b, and whether it exceeds the noise (analysis/significance.py's rule)."""
    apart = separated(a, b)
    why = f"beyond 2 SE ({abs(a.mean - b.mean):.3f} > {two_standard_errors(a, b):.3f})"
    return {
        "difference": a.mean - b.mean,
        "separated": apart,
        "why": why if apart else f"a tie ({why_tied(a, b)})",
    }


def baseline(runs: list[Run]) -> dict:
    """An unpruned model's test and val scores, tokens, categories, val curve and the blind baseline."""
    return {
        "test": Estimate.of(overall(r) for r in runs),
        "val": Estimate.of(overall(r, "val") for r in runs),
        "steps": sorted({r.config.get("stage.finetune.steps") for r in runs}, key=str),
        "tokens": Estimate.of(r.summary.get("visual_tokens", {}).get("mean") for r in runs),
        "categories": {
            c: Estimate.of(r.score("synthvqa")["categories"][c] for r in runs) for c in CATEGORIES
        },
        "seeds": sorted(r.seed for r in runs),
        "curve": val_curve(runs),
        "blind": Estimate.of(
            (r.summary.get("baselines", {}).get("synthvqa") or {}).get("majority") for r in runs
        ),
    }


def targets(block: dict) -> dict:
    """Each budget's target against the val-best method of a trained phase (kept: of its reference)."""
    out = {}
    for budget, target in TARGETS.items():
        best = block["best"][budget]
        row = block["rows"][(best["method"], budget)] if best else {}
        kept = row.get("kept")
        out[budget] = {
            "target": target,
            "method": best and best["method"],
            "kept": kept,
            "of_unpruned": row.get("of_unpruned"),
            "of_long": row.get("of_long"),
            "met": None if kept is None else kept.mean >= target,
            "met_long": None if row.get("of_long") is None else row["of_long"].mean >= target,
        }
    return out


def summarize(phases: dict[str, list[Run]]) -> dict:
    long_runs = phases.get("sparse-long", [])
    result = {
        "code_versions": sorted({r.code_version for runs in phases.values() for r in runs}),
        "unpruned": baseline(phases["sparse"]),
        "long": baseline(long_runs) if long_runs else None,
        "doubling": doubling(phases["sparse"], long_runs),
    }
    for model in filter(None, (result["unpruned"], result["long"])):
        model["convergence"] = convergence(model["curve"])
    scores = {name: {r.seed: overall(r) for r in runs} for name, runs in (("unpruned", phases["sparse"]),
                                                                          ("long", long_runs)) if runs}  # fmt: skip
    controls = [r for r in phases.get("sparse-trained", []) if method_of(r)[0] == "none"]
    # The brief retraining's control retrains the finetune stage as long without pruning, so its "kept"
    # compares equal training; the other phases share the unpruned model's aligned model and schedule.
    references = {phase: ("unpruned", scores["unpruned"]) for phase in PRUNED}
    if controls:
        references["sparse-trained"] = ("control", {r.seed: overall(r) for r in controls})
    for phase in PRUNED:
        name, against = references[phase]
        rows = methods(phases.get(phase, []), against, scores)
        result[phase] = {"reference": name, "rows": rows, "best": {b: best_on_val(rows, b) for b in BUDGETS}}
    for row in result["sparse-pruned-full"]["rows"].values():  # as much training as the unpruned models
        row["against"] = {
            name: compare(row["test"], result[key]["test"])
            for name, key in (("unpruned", "unpruned"), ("long", "long"))
            if result[key]
        }
    control = result["sparse-trained"]["rows"].get(("none", 1.0))
    if control:  # the control against the unpruned model: what the shorter retraining alone costs
        control["kept"] = control["of_unpruned"]
    result["targets"] = {
        phase: targets(result[phase])
        for phase in ("sparse-pruned-full", "sparse-trained")
        if result[phase]["rows"]
    }
    return result


def _cell(estimate: Estimate | None, digits: int = 3) -> str:
    return "" if estimate is None else f"{estimate.mean:.{digits}f} ± {estimate.std:.{digits}f}"


def _pct(estimate: Estimate | None) -> str:
    return "" if estimate is None else f"{100 * estimate.mean:.1f}% ± {100 * estimate.std:.1f}"


RISING = {True: "no", False: "yes", None: "unknown"}  # by whether the curve converged
REFERENCES = {
    "control": "the same seed's control (the finetune stage retrained as long, without pruning)",
    "unpruned": "the same seed's unpruned model",
}


def _baseline_lines(title: str, u: dict) -> list[str]:
    return [
        f"**{title}** ({u['tokens'].mean:.0f} tokens, finetune steps {u['steps']}), n = {u['test'].n} (seeds "
        f"{u['seeds']}): test overall **{_cell(u['test'])}**, val {_cell(u['val'])}; blind majority (the "
        f"question alone) {_cell(u['blind'])}.",
        "",
        "| " + " | ".join(CATEGORIES) + " |",
        "|---" * len(CATEGORIES) + "|",
        "| " + " | ".join(_cell(u["categories"][c]) for c in CATEGORIES) + " |",
        "",
        "Val overall during finetune (600 val questions per check, mean ± std over seeds): "
        + ", ".join(f"step {s}: {_cell(e)}" for s, e in u["curve"].items())
        + ".",
        f"Rising at the last check: {RISING[u['convergence']['converged']]} ({u['convergence']['why']}).",
    ]


def markdown(result: dict) -> str:
    u = result["unpruned"]
    lines = [
        f"Code version of every run: {', '.join(map(str, result['code_versions']))}.",
        "",
        *_baseline_lines("Unpruned", u),
    ]
    if result["long"]:
        lines += ["", *_baseline_lines("Unpruned, finetune twice as long", result["long"])]
    lines.append(
        f"\nConverged (a schedule twice as long does not raise val beyond 2 SE): "
        f"{result['doubling']['converged']} ({result['doubling']['why']})."
    )
    for phase in PRUNED:
        block = result[phase]
        if not block["rows"]:
            continue
        shares = [("of_unpruned", "of the unpruned model")] * (block["reference"] != "unpruned") + [
            ("of_long", "of the twice-as-long model")
        ] * bool(result["long"])
        columns = ["method", "budget", "n", "tokens", "val overall", "test overall", "kept"]
        columns += [label for _, label in shares]
        lines += [
            "",
            f"**{PHASES[phase].capitalize()}** (best per budget chosen on val; kept = test / the test of "
            f"{REFERENCES[block['reference']]}):",
            "",
            "| " + " | ".join(columns) + " |",
            "|---" * len(columns) + "|",
        ]
        compared = []
        for (method, budget), row in block["rows"].items():
            best = block["best"].get(budget)
            mark = ""
            if best and best["method"] == method:
                mark = {True: " **best**", False: " best (tie)", None: " (the only one)"}[best["separated"]]
            label = budget if budget == ADAPTIVE else f"{100 * budget:.1f}%"
            if method == "none":
                mark = " (the control; kept: against the unpruned model)"
            cells = [f"{method}{mark}", label, row["test"].n, f"{row['tokens'].mean:.1f}", _cell(row["val"]),
                     _cell(row["test"]), _pct(row["kept"]), *(_pct(row[key]) for key, _ in shares)]  # fmt: skip
            lines.append("| " + " | ".join(map(str, cells)) + " |")
            compared += [
                f"{method} at {label} against the {name.replace('long', 'twice-as-long')} model (test): "
                f"{verdict['difference']:+.3f}, {verdict['why']}"
                for name, verdict in row.get("against", {}).items()
            ]
        if compared:
            lines += ["", *(f"- {line}" for line in compared)]
        if phase == "sparse-pruned-full":  # where the whole finetune saw the pruned tokens: by category
            lines += [
                "",
                "| test by category | " + " | ".join(CATEGORIES) + " |",
                "|---" * (len(CATEGORIES) + 1) + "|",
                *(
                    f"| {name} | " + " | ".join(_cell(model["categories"][c]) for c in CATEGORIES) + " |"
                    for name, model in (("unpruned", u), ("unpruned, twice as long", result["long"]))
                    if model
                ),
                *(
                    f"| {method}, {100 * budget:.1f}% | "
                    + " | ".join(_cell(row["categories"][c]) for c in CATEGORIES)
                    + " |"
                    for (method, budget), row in block["rows"].items()
                ),
            ]
        for budget in BUDGETS:
            best = block["best"].get(budget)
            if best and best["separated"] is False:
                ties = "; ".join(f"{m}: {why}" for m, why in best["ties"].items())
                lines.append(
                    f"\n{100 * budget:.1f}%: {best['method']} has the best val mean but ties with {ties}."
                )
    lines.append("")
    for phase, by_budget in result["targets"].items():
        reference = {"unpruned": "unpruned model"}.get(result[phase]["reference"], "control")
        for budget, target in by_budget.items():
            if target["kept"] is None:
                continue
            longer = f", {_pct(target['of_long'])} of the twice-as-long model's" if target["of_long"] else ""
            lines.append(
                f"- Target at {100 * budget:.1f}%, {PHASES[phase]}: the val-best method ({target['method']}) "
                f"keeps {_pct(target['kept'])} (n = {target['kept'].n}) of the {reference}'s score"
                + (
                    f" and {_pct(target['of_unpruned'])} of the unpruned model's"
                    if reference == "control"
                    else ""
                )
                + f"{longer}; target ≥ {100 * target['target']:.0f}% of the {reference}'s: "
                f"**{'met' if target['met'] else 'not met'}**"
                + (
                    f"; of the twice-as-long model's: **{'met' if target['met_long'] else 'not met'}**"
                    if target["met_long"] is not None
                    else ""
                )
                + "."
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
    """Share of the reference's score kept against visual tokens, one panel per pruned phase, ±1 std bars."""
    from mmcompress.analysis.report.plots import pyplot, spread_labels

    plt = pyplot()
    phases = [phase for phase in PRUNED if result[phase]["rows"]]
    fig, axes = plt.subplots(
        1, len(phases), figsize=(4.6 * len(phases) + 0.5, 4.4), sharey=True, squeeze=False
    )
    names = sorted({method for phase in phases for method, _ in result[phase]["rows"]})
    colour = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(names)}  # one colour per method
    labels = []
    for ax, phase in zip(axes[0], phases, strict=True):
        by_method: dict[str, list] = defaultdict(list)
        for (method, _), row in result[phase]["rows"].items():
            if row["kept"] is not None and method != "none":  # the control is the reference, 1.0
                by_method[method].append((row["tokens"].mean, row["kept"].mean, row["kept"].std))
        for method, points in sorted(by_method.items()):
            points.sort()
            xs, ys, errs = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=colour[method])
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
        if result[phase]["reference"] == "control":
            base = result[phase]["rows"][("none", 1.0)]["test"]
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
        ax.set_title(
            f"{PHASES[phase]}\nreference: the {result[phase]['reference']}".replace(
                "unpruned", "unpruned model"
            ),
            fontsize=10,
        )
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("test score kept (of the same seed's reference)", fontsize=9)
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
