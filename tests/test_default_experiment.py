"""The learning bar: `mmcompress train` with no overrides must clearly beat the blind baseline; then the
evaluation suite and `predict` on that finished run.

Runs the real default experiment from an empty cache, exactly as on a new machine: the data is generated
and the shipped mini expert is used. Only the output location differs from a user's run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import cli

MARGIN = 0.45  # overall ≥ blind majority + 0.45
COLOR_MIN = 0.95
EXISTENCE_MIN = 0.85


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[Path, float]:
    """`mmcompress train` with no overrides from an empty cache; the run directory and its wall time."""
    root = tmp_path_factory.mktemp("default")
    start = time.time()
    # ~7 minutes alone on 2 cores; the generous limit only guards against a hang within CI's 90 minutes
    result = cli(
        "train", f"paths.runs={root / 'runs'}", env={"MMCOMPRESS_CACHE": str(root / "cache")}, timeout=3600
    )
    return Path(result.stdout.strip().splitlines()[-1]), time.time() - start


@pytest.mark.slow
@pytest.mark.default_experiment
def test_default_experiment_learns_from_the_images(default_run):
    run, elapsed = default_run
    summary = json.loads((run / "summary.json").read_text())
    scores, baseline = summary["scores"]["synthvqa"], summary["baselines"]["synthvqa"]
    report = {
        "wall_time_s": round(elapsed, 1),
        "overall": scores["overall"],
        "majority": baseline["majority"],
        **scores["categories"],
    }
    print(json.dumps(report))  # visible with -s and in CI logs on failure
    if os.environ.get("MMCOMPRESS_BAR_RECORD"):
        Path(os.environ["MMCOMPRESS_BAR_RECORD"]).write_text(json.dumps(report, indent=2))
    assert summary["status"] == "complete"
    assert set(scores["category_n"].values()) == {200}
    assert scores["overall"] >= baseline["majority"] + MARGIN, report
    assert scores["categories"]["color"] >= COLOR_MIN, report
    assert scores["categories"]["existence"] >= EXISTENCE_MIN, report


ALL_BENCHMARKS = "vqav2,textvqa,vizwiz,gqa,pope,mme,scienceqa,docvqa,llava_questions"


@pytest.mark.slow
@pytest.mark.default_experiment
def test_eval_suite_on_the_finished_default_run(default_run, tmp_path):
    """Every benchmark format, written from synthvqa test questions, scored by `mmcompress eval`: all three
    outputs appear, and the formats that keep synthvqa's prompt reproduce its predictions exactly."""
    from mmcompress.data import splits
    from mmcompress.rundir import RunDir
    from tests.evaluation.benchmark_fixtures import synthvqa_items, write_benchmarks

    run, _ = default_run
    before = json.loads((run / "summary.json").read_text())
    items = synthvqa_items(splits.load(RunDir(run).config(), "test"))[:60]
    counts = write_benchmarks(tmp_path, items)
    cli(
        "eval", str(run), f"eval.benchmarks=[synthvqa,{ALL_BENCHMARKS}]", f"paths.benchmarks={tmp_path}",
        f"benchmark.llava_questions.questions={tmp_path / 'llava' / 'questions.jsonl'}",
        "benchmark.vqav2.prompt_suffix=''", "benchmark.pope.prompt_suffix=''", "eval.val=false",
    )  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    lmms = json.loads((run / "eval" / "lmms_eval_results.json").read_text())
    for name, n in counts.items():
        lines = (run / "eval" / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == n, name
        scores = summary["scores"][name]
        assert scores["n"] == n and scores["metric_definition"] and scores["overall_definition"], name
    results = lmms["results"]
    assert results["pope"]["pope_f1_score,none"] == summary["scores"]["pope"]["pope"]["pooled"]["f1"]
    assert results["mme"]["mme_percetion_score,none"] == summary["scores"]["mme"]["mme"]["perception"]
    assert results["docvqa_val"]["anls,none"] == summary["scores"]["docvqa"]["overall"]
    for task in ("vqav2_val", "textvqa_val", "vizwiz_vqa_val", "gqa", "scienceqa_img", "synthvqa"):
        assert 0 <= results[task]["exact_match,none"] <= 1, task

    # the training data's figures are unchanged by the metric library: same overall, categories, baselines
    assert summary["scores"]["synthvqa"]["overall"] == before["scores"]["synthvqa"]["overall"]
    assert summary["scores"]["synthvqa"]["categories"] == before["scores"]["synthvqa"]["categories"]
    assert summary["baselines"] == before["baselines"]
    yes_no = summary["scores"]["synthvqa"]["yes_no"]
    assert set(yes_no["splits"]) == {"existence", "position"}  # its yes/no categories, scored as POPE

    # VQAv2 and POPE files with synthvqa's prompt: the same predictions, scored by their own metrics
    synth = [json.loads(line) for line in (run / "eval" / "synthvqa.jsonl").read_text().splitlines()][:60]
    vqav2 = [json.loads(line) for line in (run / "eval" / "vqav2.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in vqav2] == [r["prediction"] for r in synth]
    assert [r["score"] for r in vqav2] == [r["score"] for r in synth]
    yes_no_items = [r for r in synth if r["answer"] in ("yes", "no")]
    pope_order = [r for s in range(3) for r in yes_no_items[s::3]]  # the fixture deals them round-robin
    pope = [json.loads(line) for line in (run / "eval" / "pope.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in pope] == [r["prediction"] for r in pope_order]
    assert [r["score"] for r in pope] == [r["score"] for r in pope_order]


@pytest.mark.slow
@pytest.mark.default_experiment
def test_predict_answers_as_evaluation_does(default_run, tmp_path):
    """`predict` on one image and on a question file gives exactly the eval stage's answers."""
    from mmcompress.data import splits
    from mmcompress.rundir import RunDir
    from tests.evaluation.benchmark_fixtures import synthvqa_items, write_benchmarks

    run, _ = default_run
    items = synthvqa_items(splits.load(RunDir(run).config(), "test"))[:12]
    synth = [json.loads(line) for line in (run / "eval" / "synthvqa.jsonl").read_text().splitlines()][:12]
    one = cli("predict", str(run), "--image", str(items[3].image), "--question", items[3].question)
    assert one.stdout.strip() == synth[3]["prediction"]

    write_benchmarks(tmp_path, items)
    out = tmp_path / "answers.jsonl"
    cli("predict", str(run), "--questions", str(tmp_path / "llava" / "questions.jsonl"), "--out", str(out))
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["question_id"] for a in answers] == list(range(12))
    assert [a["text"] for a in answers] == [r["prediction"] for r in synth]

    bad = cli("predict", str(run), "--image", str(tmp_path / "missing.png"), "--question", "?", check=False)
    assert (
        bad.returncode == 1
        and bad.stderr.count("\n") <= 1
        and "missing.png does not exist" in bad.stdout + bad.stderr
    )
