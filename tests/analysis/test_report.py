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
    root: Path,
    name: str,
    lr: float,
    seed: int,
    val: float,
    test: float,
    tokens: int,
    status="complete",
    choices: dict | None = None,
):
    """A run directory as `mmcompress train` writes it, with chosen scores (`choices`: config groups)."""
    run = root / name
    run.mkdir(parents=True)
    choices = choices or {"encoder": "clip"}
    (run / "config.yaml").write_text(
        f"seed: {seed}\nstage:\n  finetune:\n    lr: {lr}\nchoices:\n"
        + "".join(f"  {k}: {v}\n" for k, v in choices.items())
        + f"paths:\n  runs: {root}\n"
    )
    (run / "overrides.txt").write_text(
        f"stage.finetune.lr={lr}\nseed={seed}\n"
        + "".join(f"{k}={v}\n" for k, v in choices.items() if v != "clip")
    )
    names = ("color", "count", "existence", "position", "shape", "text")
    categories = {
        c: min(1.0, test + 0.02 * i)
        for i, c in enumerate(names[: 2 if choices == {"encoder": "clip"} else 6])
    }
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
    _fake_run(root, "a2", 1e-3, 2, val=0.85, test=0.75, tokens=64)
    _fake_run(root, "b0", 2e-3, 0, val=0.70, test=0.95, tokens=64)
    _fake_run(root, "b1", 2e-3, 1, val=0.72, test=0.93, tokens=64)
    _fake_run(root, "b2", 2e-3, 2, val=0.68, test=0.94, tokens=64)
    _fake_run(root, "c0", 3e-3, 0, val=0, test=0, tokens=64, status="failed")
    return root


def test_seeds_aggregate_and_failed_runs_stay(fake_runs):
    built = Report.build([fake_runs])
    assert built.keys == ["stage.finetune.lr"]  # seed aggregates, it does not vary a configuration
    rows = {r["lr"]: r for r in built.rows()}
    assert rows["0.001"]["test"] == "0.750 ± 0.050" and rows["0.001"]["seeds"] == "0,1,2"
    assert rows["0.001"]["n"] == "3" and rows["0.003"]["n"] == "0"
    assert rows["0.003"]["status"] == "failed" and "nan" in rows["0.003"]["error"]
    _, label = built.best()
    assert label == "lr=0.001"  # highest mean val (0.85), although lr=0.002 has the best test score
    # 0.85 ± 0.05 vs 0.70 ± 0.02, n = 3 each: difference 0.15 > 2 SE = 0.062
    assert built.selection().startswith("best configuration (selected on val, synthvqa): lr=0.001")
    assert "test 0.750 ± 0.050 (n=3)" in built.selection()


def test_a_best_configuration_within_the_noise_or_with_few_seeds_is_a_tie(fake_runs):
    for name, val in (("b0", 0.90), ("b1", 0.80), ("b2", 0.84)):  # now 0.847 ± 0.050 vs 0.850 ± 0.050
        summary = json.loads((fake_runs / name / "summary.json").read_text())
        summary["val_scores"]["synthvqa"]["overall"] = val
        (fake_runs / name / "summary.json").write_text(json.dumps(summary))
    line = Report.build([fake_runs]).selection()
    assert line.startswith("tie on val (synthvqa): the top configuration lr=0.001") and "2 SE" in line
    for name in ("a1", "a2", "b1", "b2"):  # one seed each
        (fake_runs / name / "summary.json").unlink()
    for name in ("b0",):
        summary = json.loads((fake_runs / name / "summary.json").read_text())
        summary["val_scores"]["synthvqa"]["overall"] = 0.5
        (fake_runs / name / "summary.json").write_text(json.dumps(summary))
    line = Report.build([fake_runs]).selection()
    assert line.startswith("tie on val") and "fewer than 3" in line  # 0.90 vs 0.50, but one seed each


def test_written_report_has_every_run_and_labelled_plots(fake_runs, tmp_path):
    built = Report.build([fake_runs])
    written = write(built, tmp_path / "report")
    with written["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and {r["status"] for r in rows} == {"complete", "failed"}
    assert "selected on val" in written["md"].read_text()
    html = written["html"].read_text()
    assert "data:image/png;base64," in html and "<table>" in html  # self-contained
    assert "white-space:nowrap" in html  # "mean ± std" stays on one line
    for name in ("accuracy_vs_tokens", "categories", "training_curves"):
        assert written[name].stat().st_size > 5000
        fig = PLOTS[name](built)
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel() and ax.has_data()
    assert "ac_scatter" not in written  # no AC scores in these runs


def test_different_code_versions_are_refused_unless_allowed(fake_runs, tmp_path):
    from mmcompress.errors import UserError
    from tests.conftest import cli

    summary = json.loads((fake_runs / "b0" / "summary.json").read_text())
    summary["env"]["code_version"] = "def"
    (fake_runs / "b0" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(
        UserError, match=r"2 code versions \(abc: 6 runs, def: 1 runs\).*--allow-mixed-versions"
    ):
        Report.build([fake_runs])
    notes = Report.build([fake_runs], allow_mixed_versions=True).notes()
    assert any("different code versions" in note for note in notes)
    refused = cli("report", str(fake_runs), "--out", str(tmp_path / "r"), check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr and not (tmp_path / "r").exists()


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


@pytest.fixture
def mixture_runs(tmp_path) -> Path:
    """The expert-mixtures experiment's shape: 8 encoder × fusion configurations, 3 seeds, all at 64 tokens."""
    root = tmp_path / "mixtures"
    encoders = ("clip", "clip+sam", "clip+convnext+sam+pix2struct")
    configs = [
        (e, f) for e in encoders for f in ("concat", "sequence", "xattn") if (e, f) != ("clip", "xattn")
    ]
    for i, (encoder, fusion) in enumerate(configs):
        for seed in range(3):
            score = 0.80 + 0.005 * i + 0.01 * seed
            _fake_run(
                root,
                f"m{i}-{seed}",
                1e-3,
                seed,
                score,
                score,
                64,
                choices={"encoder": encoder, "fusion": fusion},
            )
    return root


@pytest.fixture
def pruning_runs(tmp_path) -> Path:
    """A pruning sweep's shape: 4 methods × 3 ratios, 3 seeds; the methods share each ratio's token count."""
    root = tmp_path / "pruning"
    for i, method in enumerate(("random", "topk", "visionzip", "divprune")):
        for ratio in (0.11, 0.25, 0.5):
            for seed in range(3):
                score = 0.6 + 0.3 * ratio + 0.004 * i + 0.01 * seed
                name = f"{method}-{ratio}-{seed}"
                _fake_run(
                    root, name, 1e-3, seed, score, score, round(64 * ratio), choices={"pruning": method}
                )
                config = root / name / "config.yaml"
                config.write_text(config.read_text() + f"pruning:\n  ratio: {ratio}\n")
                overrides = root / name / "overrides.txt"
                overrides.write_text(overrides.read_text() + f"pruning.ratio={ratio}\n")
    return root


@pytest.mark.parametrize("runs", ["mixture_runs", "pruning_runs"])
def test_every_plot_is_legible_at_the_size_the_page_shows_it(runs, request):
    """No figure wider than the page column (so never shrunk), no text under MIN_FONT points, and no two
    texts overlapping — eight configurations at one token count, and labels sharing a token count."""
    import io

    from matplotlib.text import Text

    from mmcompress.analysis.report.plots import DPI, MAX_WIDTH, MIN_FONT

    built = Report.build([request.getfixturevalue(runs)])
    assert len(built.groups) == (8 if runs == "mixture_runs" else 12)
    for name in ("accuracy_vs_tokens", "categories", "training_curves"):
        fig = PLOTS[name](built)
        fig.tight_layout()
        fig.savefig(io.BytesIO(), format="png", dpi=DPI)  # the layout the PNG has
        assert fig.get_figwidth() <= MAX_WIDTH, name
        renderer = fig.canvas.get_renderer()
        undrawn = {  # tick labels outside the axis' view are never drawn
            id(label)
            for axes in fig.axes
            for axis in (axes.xaxis, axes.yaxis)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks()
            if not min(axis.get_view_interval()) <= tick.get_loc() <= max(axis.get_view_interval())
            for label in (tick.label1, tick.label2)
        }
        texts = [
            t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn
        ]
        assert all(t.get_fontsize() >= MIN_FONT for t in texts), (name, min(t.get_fontsize() for t in texts))
        boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in texts]  # text, not leader line
        figure_box = fig.bbox
        for i, (text, box) in enumerate(boxes):
            assert figure_box.x0 - 1 <= box.x0 and box.x1 <= figure_box.x1 + 1, (name, text)  # inside the PNG
            for other, other_box in boxes[i + 1 :]:
                assert not box.overlaps(other_box), (name, text, other)
