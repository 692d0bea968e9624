"""The report: Pareto front on known points, seed aggregation, selection on val, failed runs kept."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmcompress.analysis.report.output import write
from mmcompress.analysis.report.plots import PLOTS
from mmcompress.analysis.report.runs import pareto_front, short_names
from mmcompress.analysis.report.table import Report


def test_pareto_front_on_known_points():
    # (visual tokens, accuracy): lower cost and higher score win
    points = [(64, 0.90), (32, 0.85), (16, 0.70), (32, 0.80), (64, 0.85), (8, 0.70), (128, 0.90)]
    assert pareto_front(points) == [True, True, False, False, False, True, False]
    assert pareto_front([(1, 1.0)]) == [True]
    assert pareto_front([(2, 0.5), (2, 0.5)]) == [True, True]  # ties dominate neither


def test_short_names_are_the_shortest_unique_suffixes():
    keys = ["stage.finetune.lr", "stage.align.lr", "seed", "llm.initializer_range"]
    assert short_names(keys) == {
        "stage.finetune.lr": "finetune.lr",
        "stage.align.lr": "align.lr",
        "seed": "seed",
        "llm.initializer_range": "initializer_range",
    }


def _fake_run(
    root: Path, name: str, lr: float, seed: int, val: float, test: float, tokens: int, status="complete"
):
    """A run directory as `mmcompress train` writes it, with chosen scores."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"seed: {seed}\nstage:\n  finetune:\n    lr: {lr}\nchoices:\n  encoder: clip\npaths:\n  runs: {root}\n"
    )
    (run / "overrides.txt").write_text(f"stage.finetune.lr={lr}\nseed={seed}\n")
    categories = {"color": test, "existence": test}
    summary = {
        "schema_version": 1,
        "status": status,
        "env": {"code_version": "abc"},
        "wall_time_s": 10.0,
        "visual_tokens": {"mean": tokens, "min": tokens, "max": tokens},
        "flops": {"per_question": 2e9},
    }
    if status == "complete":
        summary |= {
            "scores": {"synthvqa": {"overall": test, "categories": categories}},
            "val_scores": {"synthvqa": {"overall": val, "categories": categories}},
            "baselines": {
                "synthvqa": {"majority": 0.3, "categories": {c: {"majority": 0.3} for c in categories}}
            },
        }
    else:
        summary["error"] = "the finetune loss became nan at step 3"
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"stage": "finetune", "step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3))
    )


@pytest.fixture
def fake_runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    # lr 1e-3: best on val, worse on test; lr 2e-3: better on test — selection must use val
    _fake_run(root, "a0", 1e-3, 0, val=0.90, test=0.80, tokens=64)
    _fake_run(root, "a1", 1e-3, 1, val=0.80, test=0.70, tokens=64)
    _fake_run(root, "b0", 2e-3, 0, val=0.70, test=0.95, tokens=64)
    _fake_run(root, "c0", 3e-3, 0, val=0, test=0, tokens=64, status="failed")
    return root


def test_seeds_aggregate_and_failed_runs_stay(fake_runs):
    built = Report.build([fake_runs])
    assert built.keys == ["stage.finetune.lr"]  # seed aggregates, it does not vary a configuration
    rows = {r["lr"]: r for r in built.rows()}
    assert rows["0.001"]["test"] == "0.750 ± 0.071" and rows["0.001"]["seeds"] == "0,1"
    assert rows["0.003"]["status"] == "failed" and "nan" in rows["0.003"]["error"]
    _, label = built.best()
    assert label == "lr=0.001"  # highest mean val (0.85), although lr=0.002 has the best test score


def test_written_report_has_every_run_and_labelled_plots(fake_runs, tmp_path):
    built = Report.build([fake_runs])
    written = write(built, tmp_path / "report")
    with written["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"complete", "failed"}
    assert "selected on val" in written["md"].read_text()
    html = written["html"].read_text()
    assert "data:image/png;base64," in html and "<table>" in html  # self-contained
    for name in ("accuracy_vs_tokens", "categories", "training_curves"):
        assert written[name].stat().st_size > 5000
        fig = PLOTS[name](built)
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel() and ax.has_data()
    assert "ac_scatter" not in written  # no AC scores in these runs


def test_different_code_versions_are_flagged(fake_runs):
    summary = json.loads((fake_runs / "b0" / "summary.json").read_text())
    summary["env"]["code_version"] = "def"
    (fake_runs / "b0" / "summary.json").write_text(json.dumps(summary))
    assert any("different code versions" in note for note in Report.build([fake_runs]).notes())


def test_no_runs_is_a_clear_error(tmp_path):
    from mmcompress.errors import UserError

    with pytest.raises(UserError, match="no runs found"):
        Report.build([tmp_path])


def test_report_cli_writes_the_folder_and_mirrors_to_wandb_offline(fake_runs, tmp_path):
    from tests.conftest import cli

    out = tmp_path / "report"
    result = cli("report", str(fake_runs), "--out", str(out), "--wandb", env={"WANDB_MODE": "offline"})
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert {"report.md", "report.html", "runs.csv", "categories.png"} <= {p.name for p in out.iterdir()}
    assert list(out.glob("wandb/offline-run-*/run-*.wandb"))  # the W&B mirror, synced later
    assert "best configuration (selected on val" in " ".join(result.stderr.split())


def test_evaluations_of_each_seeds_model_group_as_one_configuration(fake_runs):
    """`init_from` runs evaluating the seed-0 and seed-1 models of one configuration are one group, so
    training-free pruning results aggregate over seeds like any other."""
    root = fake_runs.parent / "free"
    for seed, source in ((0, "a0"), (1, "a1")):
        for ratio, test in ((0.25, 0.6 + seed / 10), (0.5, 0.7)):
            name = f"free{seed}-{ratio}"
            _fake_run(root, name, 1e-3, seed, val=test, test=test, tokens=int(64 * ratio))
            run = root / name
            config = run / "config.yaml"
            config.write_text(
                config.read_text() + f"init_from: {fake_runs / source}\npruning:\n  ratio: {ratio}\n"
            )
            (run / "overrides.txt").write_text(
                f"seed={seed}\ninit_from={fake_runs / source}\npruning.ratio={ratio}\n"
            )
    built = Report.build([root])
    assert built.keys == ["pruning.ratio"]  # init_from differs only by the seed of the model it evaluates
    rows = {r["ratio"]: r for r in built.rows()}
    assert rows["0.25"]["seeds"] == "0,1" and rows["0.25"]["test"] == "0.650 ± 0.071"
