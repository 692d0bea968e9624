"""Sweep expansion (Hydra's syntax) and a small sweep end to end: skip, resume, failures reported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmcompress.analysis.sweep import expand
from mmcompress.errors import ConfigError
from tests.conftest import cli


def test_comma_lists_expand_to_the_product_in_key_order():
    assert expand(["seed=0,1", "stage.finetune.lr=1e-3,2e-3", "debug=fast"]) == [
        ["seed=0", "stage.finetune.lr=0.001", "debug=fast"],
        ["seed=0", "stage.finetune.lr=0.002", "debug=fast"],
        ["seed=1", "stage.finetune.lr=0.001", "debug=fast"],
        ["seed=1", "stage.finetune.lr=0.002", "debug=fast"],
    ]


def test_range_choice_and_glob():
    assert expand(["seed=range(0,3)"]) == [["seed=0"], ["seed=1"], ["seed=2"]]
    assert expand(["optim.schedule=choice(wsd,cosine)"]) == [
        ["optim.schedule=wsd"],
        ["optim.schedule=cosine"],
    ]
    assert expand(["projector=glob(*)"]) == [["projector=linear"], ["projector=mlp"]]
    assert expand(["llm=glob(*,exclude=[hf,qwen*,smollm*,vicuna*])"]) == [["llm=tiny"]]


def test_lists_inside_a_value_are_one_value():
    assert expand(["stages=[align,finetune]", "seed=1,2"]) == [
        ["stages=[align,finetune]", "seed=1"],
        ["stages=[align,finetune]", "seed=2"],
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=interval(0,1)", "interval sweep"),
        ("seed=glob(*)", "glob\\(\\) selects options of a config group"),
        ("seed=1,,2", "malformed override"),
        ("projector=glob(nope*)", "expands to no value"),
    ],
)
def test_bad_sweeps_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        expand([override])


@pytest.mark.slow
def test_sweep_end_to_end_skips_finished_runs_and_reports_failures(cache_dir, tmp_path):
    runs = tmp_path / "runs"
    base = ["sweep", "debug=fast", "logger=none", f"paths.runs={runs}"]
    first = cli(*base, "seed=0,1", "projector=mlp,linear", timeout=600)
    sweep_dir = Path(first.stdout.strip().splitlines()[-1])
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["complete"] * 4
    assert record["wandb_group"].startswith("default-sweep-")
    for entry in record["runs"]:
        run_config = (Path(entry["run_dir"]) / "config.yaml").read_text()
        assert f"group: {record['wandb_group']}" in run_config  # every run of the sweep shares its W&B group

    again = cli(*base, "seed=0,1", "projector=mlp,linear")
    assert "0 complete, 4 skipped, 0 failed" in " ".join(again.stderr.split())  # nothing trained again
    assert [r["status"] for r in json.loads((sweep_dir / "sweep.json").read_text())["runs"]] == [
        "skipped"
    ] * 4

    # One run made to fail (its expert cannot be loaded offline); the other is the finished seed-0 mlp run.
    failing = cli(*base, "seed=0", "encoder.experts.clip.checkpoint=mini,acme/missing-clip", check=False)
    assert failing.returncode == 1
    record = json.loads((Path(failing.stdout.strip().splitlines()[-1]) / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["skipped", "failed"]
    assert "acme/missing-clip is not in this machine's hub cache" in record["runs"][1]["error"]

    out = tmp_path / "report"
    cli("report", str(runs), "--out", str(out))
    with (out / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and [r["status"] for r in rows].count("failed") == 1
    assert "failed" in (out / "report.md").read_text()


@pytest.mark.slow  # an end-to-end CLI run
def test_dry_run_plans_skip_resume_and_run_without_running(cache_dir, tmp_path):
    runs = f"paths.runs={tmp_path}"
    cli("train", "debug=fast", "logger=none", runs, "seed=1", "stages=[prealign,align]")  # an unfinished run
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = cli("sweep", "debug=fast", "logger=none", runs, "seed=range(0,3)", "--dry-run")
    plan = " ".join(result.stderr.split())
    assert "3 runs" in plan and all(f"seed={s}" in plan for s in range(3))
    assert plan.count("│ run │") == 2 and plan.count("│ resume │") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # a dry run writes nothing


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["launcher=parallel", "launcher=slurm"])
def test_parallel_and_submitit_launchers_write_the_same_run_directories(cache_dir, tmp_path, launcher):
    extra = ["launcher.cluster=local", "launcher.poll_s=1"] if launcher == "launcher=slurm" else []
    result = cli("sweep", "debug=fast", "logger=none", f"paths.runs={tmp_path}", "seed=3,4", launcher, *extra)
    record = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "sweep.json").read_text())
    assert record["launcher"] == launcher.split("=")[1]
    assert [r["status"] for r in record["runs"]] == ["complete", "complete"]
    for entry in record["runs"]:
        summary = json.loads((Path(entry["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["scores"]["synthvqa"]["n"] == 24
