"""Writing a report: report.md, a self-contained report.html, runs.csv (one row per run, failed ones too),
the PNG plots, and a mirror to W&B."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

from mmcompress.analysis.report.plots import PLOTS, to_png
from mmcompress.analysis.report.table import Report, config_label, fmt, gflops


def write(report: Report, out: Path) -> dict[str, Path]:
    """report.md, a self-contained report.html, runs.csv (one row per run, failed ones too) and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    written = {"csv": out / "runs.csv"}
    _write_csv(report, written["csv"])
    images = {}
    for name, plot in PLOTS.items():
        fig = plot(report) if report.benchmark or name == "training_curves" else None
        if fig is not None:
            png = to_png(fig)
            images[name] = png
            written[name] = out / f"{name}.png"
            written[name].write_bytes(png)
    rows = report.rows()
    notes = report.notes()
    md = ["# mmcompress report", "", *[f"- {n}" for n in notes], "", _markdown_table(rows), ""]
    md += [_markdown_table(_category_rows(report)), ""] if report.benchmark else []
    md += [f"![{name}]({name}.png)\n" for name in images]
    written["md"] = out / "report.md"
    written["md"].write_text("\n".join(md))
    written["html"] = out / "report.html"
    written["html"].write_text(_html(rows, _category_rows(report) if report.benchmark else [], notes, images))
    return written


def _category_rows(report: Report) -> list[dict[str, str]]:
    b = report.benchmark
    rows = []
    for g in report.groups:
        if not g.complete:
            continue
        categories = sorted(g.complete[0].score(b)["categories"])
        row = {"configuration": config_label(g, report.keys)}
        row |= {c: fmt(g.stat(lambda r, c=c: r.score(b)["categories"].get(c))) for c in categories}
        rows.append(row)
    return rows


def _write_csv(report: Report, path: Path) -> None:
    b = report.benchmark
    categories = (
        sorted({c for r in report.runs for c in ((r.score(b) or {}).get("categories") or {})}) if b else []
    )
    columns = ["run", "status", "error", *report.keys, "seed", "val_overall", "test_overall"]
    columns += [f"test_{c}" for c in categories] + [
        "majority",
        "visual_tokens",
        "gflops",
        "wall_time_s",
        "code_version",
        "path",
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in report.runs:
            test = r.score(b) or {} if b else {}
            writer.writerow(
                {
                    "run": r.name,
                    "status": r.status,
                    "error": r.error or "",
                    **{k: r.config.get(k, "") for k in report.keys},
                    "seed": r.seed if r.seed is not None else "",
                    "val_overall": (r.score(b, "val") or {}).get("overall", "") if b else "",
                    "test_overall": test.get("overall", ""),
                    **{f"test_{c}": test.get("categories", {}).get(c, "") for c in categories},
                    "majority": r.summary.get("baselines", {}).get(b, {}).get("majority", "") if b else "",
                    "visual_tokens": r.summary.get("visual_tokens", {}).get("mean", ""),
                    "gflops": gflops(r) or "",
                    "wall_time_s": r.summary.get("wall_time_s", ""),
                    "code_version": r.code_version or "",
                    "path": str(r.path or ""),
                }
            )


def _markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[h]).replace("|", "\\|") for h in header) + " |" for row in rows]
    return "\n".join(lines)


def _html(rows, category_rows, notes, images) -> str:
    def table(rows):
        if not rows:
            return ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
        body = "".join(
            f"<tr class='{'failed' if 'failed' in row.get('status', '') else ''}'>"
            + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values())
            + "</tr>"
            for row in rows
        )
        return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"

    figures = "".join(
        f"<figure><img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{name.replace('_', ' ')}</figcaption></figure>"
        for name, png in images.items()
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}th{background:#f3f3f3}"
        ".scroll{overflow-x:auto}"  # a wide table scrolls instead of wrapping every "mean ± std"
        "tr.failed td{color:#b00}img{max-width:100%}figure{display:inline-block;margin:1em}"
    )
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>mmcompress report</title><style>{style}</style>"
        f"</head><body><h1>mmcompress report</h1><ul>{items}</ul>{table(rows)}<h2>Per category (test)</h2>"
        f"{table(category_rows)}{figures}</body></html>\n"
    )


def log_to_wandb(report: Report, written: dict[str, Path], project: str) -> None:
    """Mirror the report to W&B as one run of job type `report`: the table and the plots."""
    import wandb

    from mmcompress.tracking import wandb_mode

    run = wandb.init(
        project=project, job_type="report", mode=wandb_mode("auto"), dir=str(written["md"].parent)
    )
    try:
        rows = report.rows()
        run.log({"report/runs": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])})
        run.log(
            {
                f"report/{name}": wandb.Image(str(path))
                for name, path in written.items()
                if path.suffix == ".png"
            }
        )
    finally:
        run.finish()
