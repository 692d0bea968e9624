"""What `mmcompress ac` writes and prints: ac.json (everything), ac.md (the table and the fits) and ac.png
(the (A, C) plane and each fit's leave-one-out predictions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mmcompress.analysis.report.plots import pyplot, to_png
from mmcompress.console import console
from mmcompress.rundir import atomic_write


def write(result: dict, out: Path) -> None:
    """ac.json (everything), ac.md (the table) and ac.png (the (A, C) plane and the fits)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "ac.json", json.dumps(result, indent=2, default=float) + "\n")
    rows = ["| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    rows += ["| " + " | ".join(_cells(c)) + " |" for c in result["candidates"]]
    rows += ["", *_fit_lines(result)]
    atomic_write(out / "ac.md", "\n".join(rows) + "\n")
    (out / "ac.png").write_bytes(to_png(plot(result)))


COLUMNS = ("candidate", "A", "C (PCK@0.10)", "PCK@0.05", "score", "predicted")


def _cells(candidate: dict) -> list[str]:
    c = candidate
    return [
        c["label"],
        f"{c['a']:.4f}",
        f"{c['c']:.4f}",
        f"{c['c_pck05']:.4f}",
        _score(c),
        _num(c["predicted"]),
    ]


def _score(candidate: dict) -> str:
    """The trained score; over several seeds, mean ± std (n)."""
    runs = len(candidate.get("runs", ()))
    if candidate["score"] is None or runs < 2:
        return _num(candidate["score"])
    return f"{candidate['score']:.3f} ± {candidate['score_std']:.3f} (n={runs})"


def _num(value, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _fit_lines(result: dict) -> list[str]:
    lines = []
    for name, f in (result.get("fit") or {}).items():
        lines.append(
            f"- {name}: R² {_num(f['r2'])}, leave-one-out R² {_num(f['loo_r2'])} ({f['terms']} terms)"
        )
    if result.get("form"):
        lines.append(
            f"- predictions and policy use the {result['form']['chosen']} fit: {result['form']['why']}"
        )
    if result.get("underdetermined"):
        lines.append("- fewer trained candidates than the chosen form's terms: the fit is underdetermined")
    sim = result.get("policy_simulation")
    if sim:
        lines.append(
            f"- AC policy over {sim['trials']} trials: the best is in the predicted top-3 within 3 trainings "
            f"{sim['policy_success_within_3']:.2f} of the time (random choice: "
            f"{sim['random_success_within_3_exact']:.2f}); expected trainings until found "
            f"{sim['policy_expected_trainings']:.2f} (random: {sim['random_expected_trainings_exact']:.1f})"
        )
    for step in result.get("next", []):
        lines.append(f"- train next: {step['label']} ({step['why']})")
    return lines


def print_result(result: dict) -> None:
    from rich.table import Table

    trained = f"{result['trained']} of {len(result['candidates'])} trained"
    table = Table(title=f"AC scores · {result['benchmark']} ({trained})")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for c in result["candidates"]:
        table.add_row(*_cells(c))
    console.print(table)
    for line in _fit_lines(result):
        console.print(line, highlight=False)
    console.print(f"written to {result['out']}: ac.json, ac.md, ac.png")


def plot(result: dict):
    """Left: candidates on the (A, C) plane coloured by score (trained: filled; the rest: predicted, open).
    Right: each trained candidate's score against its leave-one-out prediction by the AC, A and C fits."""
    plt = pyplot()
    candidates = result["candidates"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    values = [c["score"] if c["score"] is not None else c["predicted"] for c in candidates]
    finite = [v for v in values if v is not None]
    norm = plt.Normalize(min(finite), max(finite)) if finite else None
    for c, value in zip(candidates, values, strict=True):
        colour = plt.cm.viridis(norm(value)) if value is not None and norm else "grey"
        filled = c["score"] is not None
        left.scatter(
            c["a"], c["c"], s=60, facecolors=colour if filled else "none", edgecolors=colour, linewidths=1.5
        )
        left.annotate(c["label"], (c["a"], c["c"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if norm:
        mappable = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
        fig.colorbar(mappable, ax=left, label=f"{result['benchmark']} score (open: predicted)")
    left.set(
        xlabel="A (alignment with the reference)",
        ylabel="C (PCK@0.10)",
        title="candidates on the (A, C) plane",
    )
    left.grid(alpha=0.3)
    fits = result.get("fit") or {}
    trained = [c for c in candidates if c["score"] is not None]
    if trained and any(f.get("loo_predicted") for f in fits.values()):
        y = np.array([c["score"] for c in trained])
        low, span = y.min(), (y.max() - y.min()) or 1.0
        chosen = (result.get("form") or {}).get("chosen")
        shown = {n: f for n, f in fits.items() if f["form"] == chosen or f["features"] == "AC"}
        for (name, f), marker in zip(shown.items(), "osD^v<", strict=False):
            if f.get("loo_predicted"):
                predicted = low + np.array(f["loo_predicted"]) * span
                right.scatter(
                    y, predicted, marker=marker, label=f"{name}: LOO R² {_num(f['loo_r2'])}", alpha=0.8
                )
        right.plot([y.min(), y.max()], [y.min(), y.max()], "k--", lw=0.8)
        right.legend(fontsize=8)
    right.set(
        xlabel=f"{result['benchmark']} score (trained)",
        ylabel="leave-one-out prediction",
        title="each fit predicting a held-out candidate",
    )
    right.grid(alpha=0.3)
    return fig
