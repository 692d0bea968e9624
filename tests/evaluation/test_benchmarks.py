"""Each benchmark loader reads a fixture in its standard layout; bad files are one-line errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mmcompress.data.benchmarks import BENCHMARKS, check_benchmarks, load_benchmark
from mmcompress.errors import UserError
from tests.evaluation.benchmark_fixtures import Item, write_benchmarks

SUFFIX = "\nAnswer the question using a single word or phrase."


@pytest.fixture
def bench_root(tmp_path):
    """Six images and questions (three yes/no) laid out in every benchmark format."""
    items = []
    for n, (question, answer, category) in enumerate(
        [
            ("What colour is the circle?", "red", "color"),
            ("Is there a square?", "yes", "existence"),
            ("How many shapes are there?", "2", "count"),
            ("Is the circle left of the square?", "no", "position"),
            ("What shape is blue?", "triangle", "shape"),
            ("Is there a word?", "yes", "existence"),
        ]
    ):
        image = tmp_path / "source" / f"{n}.png"
        image.parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 16), (40 * n, 0, 0)).save(image)
        items.append(Item(image, question, answer, category))
    root = tmp_path / "benchmarks"
    return root, items, write_benchmarks(root, items)


@pytest.fixture
def config(compose, bench_root):
    root = bench_root[0]
    return lambda *overrides: compose(
        f"paths.benchmarks={root}",
        f"benchmark.llava_questions.questions={root}/llava/questions.jsonl",
        *overrides,
    )


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_loader_reads_its_layout(config, bench_root, name):
    _, items, counts = bench_root
    evalset = load_benchmark(config(), name, "before")
    assert len(evalset.questions) == counts[name]
    assert all(path.is_file() for path in evalset.images)
    for q in evalset.questions:
        text = q.text
        assert text.startswith("<image>\n"), text  # LLaVA's convention when the data does not place it
        assert q.answers, q
        assert evalset.images[q.image].is_file()
    first = evalset.questions[0]
    if name in ("vqav2", "textvqa", "vizwiz", "gqa", "docvqa"):
        assert first.text == f"<image>\n{items[0].question}{SUFFIX}" or name == "vizwiz"
        assert first.answers[0] == "red"


def test_vqa_formats_keep_ten_answers_and_categories(config):
    vqav2 = load_benchmark(config(), "vqav2", "after")
    assert vqav2.questions[0].answers == ("red",) * 10
    assert vqav2.questions[0].category == "color"  # the annotation's answer_type
    assert vqav2.questions[0].text.endswith("\n<image>")  # the run's image position is honoured
    vizwiz = load_benchmark(config(), "vizwiz", "before")
    assert "Unanswerable" in vizwiz.questions[0].text


def test_textvqa_ocr_tokens_switch(config):
    plain = load_benchmark(config(), "textvqa", "before").questions[0].text
    with_ocr = (
        load_benchmark(config("benchmark.textvqa.ocr_tokens=true"), "textvqa", "before").questions[0].text
    )
    assert "Reference OCR token" not in plain
    assert "Reference OCR token: sign, 42" in with_ocr


def test_pope_splits_are_categories(config, bench_root):
    pope = load_benchmark(config(), "pope", "before")
    assert {q.category for q in pope.questions} == {"random", "popular", "adversarial"}
    assert {q.answers[0] for q in pope.questions} <= {"yes", "no"}
    only = load_benchmark(config("benchmark.pope.splits=[random]"), "pope", "before")
    assert {q.category for q in only.questions} == {"random"}


def test_mme_reads_both_folder_layouts_and_pairs_questions_by_image(config):
    mme = load_benchmark(config(), "mme", "before")
    assert {q.category for q in mme.questions} == {"existence", "artwork"}
    groups = {}
    for q in mme.questions:
        groups.setdefault(q.group, []).append(q.answers[0])
    assert all(sorted(a) == ["No", "Yes"] for a in groups.values())  # each image: the answer and its opposite


def test_scienceqa_keeps_image_questions_with_lettered_options(config, bench_root):
    _, items, _ = bench_root
    sqa = load_benchmark(config(), "scienceqa", "before")
    assert len(sqa.questions) == len(items)  # the text-only problem is not in SQA-IMG
    first, second = sqa.questions[0], sqa.questions[1]
    assert first.text.startswith("<image>\nContext: A picture.\nWhat colour")
    assert "\nA. red\nB. " in first.text and first.answers == ("A",)
    assert second.answers == ("B",)  # the answer is the second choice there
    assert first.text.endswith("Answer with the option's letter from the given choices directly.")


def test_max_samples_limits_and_drops_unused_images(config):
    evalset = load_benchmark(config("benchmark.gqa.max_samples=2"), "gqa", "before")
    assert len(evalset.questions) == 2 and len(evalset.images) == 2


def test_missing_file_names_the_key(config, tmp_path):
    with pytest.raises(UserError, match=r"does not exist; set benchmark.vqav2.questions"):
        load_benchmark(config(f"paths.benchmarks={tmp_path / 'nowhere'}"), "vqav2", "before")
    with pytest.raises(UserError, match=r"benchmark.mme.root"):
        load_benchmark(config(f"paths.benchmarks={tmp_path / 'nowhere'}"), "mme", "before")


def test_malformed_json_is_one_line(config, bench_root):
    root = bench_root[0]
    (root / "gqa" / "testdev_balanced_questions.json").write_text('{"q0": {"imageId": ')
    with pytest.raises(UserError, match=r"is not valid JSON \(line 1\)") as error:
        load_benchmark(config(), "gqa", "before")
    assert "\n" not in str(error.value)


def test_missing_images_and_wrong_files_are_reported(config, bench_root):
    root = bench_root[0]
    (root / "docvqa" / "documents" / "doc0.png").unlink()
    with pytest.raises(UserError, match=r"1 image\(s\) of docvqa are missing.*benchmark.docvqa.image_folder"):
        load_benchmark(config(), "docvqa", "before")
    (root / "pope" / "coco_pope_random.json").write_text(
        json.dumps({"question_id": 1, "image": "x.jpg", "text": "?", "label": "maybe"}) + "\n"
    )
    with pytest.raises(UserError, match="label 'maybe'"):
        load_benchmark(config(), "pope", "before")
    (root / "vizwiz" / "val.json").write_text(json.dumps([{"question": "?"}]))
    with pytest.raises(UserError, match="lacks 'image'"):
        load_benchmark(config(), "vizwiz", "before")


def test_llava_questions_without_a_file_and_unknown_benchmarks(compose):
    with pytest.raises(UserError, match=r"set benchmark\.llava_questions\.questions"):
        load_benchmark(compose(), "llava_questions", "before")
    with pytest.raises(UserError, match=r"unknown benchmark 'nope'; choose from .*pope.*synthvqa"):
        check_benchmarks(compose("eval.benchmarks=[synthvqa,nope]"))
    with pytest.raises(UserError, match="unknown benchmark 'llava'"):
        check_benchmarks(compose("eval.benchmarks=[llava]"))  # the training data here is synthvqa
    check_benchmarks(compose("eval.benchmarks=[synthvqa,pope,mme]"))


def _records(metric, rows):
    """Records as the eval stage writes them, scored by `metric`'s per-question function."""
    from mmcompress.evaluation.scoring import QUESTION_SCORES

    records = []
    for prediction, answers, category, group in rows:
        score, parsed = QUESTION_SCORES[metric](prediction, tuple(answers))
        records.append(
            {
                "prediction": prediction,
                "answer": answers[0],
                "category": category,
                "group": group,
                "score": score,
                "parsed": parsed,
            }
        )
    return records


def test_scores_name_their_definitions_and_headlines():
    from mmcompress.evaluation.scoring import score_records

    vqa = score_records(
        _records("vqa", [("two", ["2"] * 10, "count", ""), ("red", ["blue"] * 10, "color", "")]), "vqa"
    )
    assert vqa["overall"] == 0.5 and vqa["categories"] == {"color": 0.0, "count": 1.0}
    assert vqa["stderr"] == pytest.approx(0.5)  # sample std 0.707 / sqrt(2)
    assert (
        "leave-one-out" in vqa["metric_definition"]
        and vqa["overall_definition"] == "mean score over questions"
    )

    by_category = score_records(
        _records("vqa", [("a", ["a"] * 10, "x", ""), ("a", ["a"] * 10, "x", ""), ("b", ["a"] * 10, "y", "")]),
        "vqa",
        overall="categories",
    )
    assert by_category["overall"] == 0.5  # categories 1.0 and 0.0, whatever their sizes

    pope = score_records(
        _records(
            "pope",
            [
                ("Yes.", ["yes"], "random", ""),
                ("No, not.", ["yes"], "random", ""),
                ("yes", ["no"], "adversarial", ""),
            ],
        ),
        "pope",
    )
    assert pope["overall"] == round(pope["pope"]["mean_over_splits"]["f1"], 4)
    assert "averaged over the POPE splits" in pope["overall_definition"]

    mme = score_records(
        _records(
            "mme",
            [
                ("Yes", ["Yes"], "existence", "a"),
                ("No", ["No"], "existence", "a"),
                ("Yes", ["No"], "code_reasoning", "b"),
                ("No", ["No"], "code_reasoning", "b"),
            ],
        ),
        "mme",
    )
    assert mme["overall"] == 200.0 and mme["mme"]["cognition"] == 50.0
    assert mme["categories"] == {"code_reasoning": 50.0, "existence": 200.0}


def test_lmms_eval_results_layout_merges_later_benchmarks(compose, tmp_path):
    from mmcompress.evaluation.lmms_eval import write_lmms_eval
    from mmcompress.evaluation.scoring import score_records
    from mmcompress.rundir import RunDir

    cfg, run = compose(), RunDir(tmp_path / "run")
    gqa = score_records(_records("exact", [("Left.", ["left"], "x", ""), ("no", ["yes"], "x", "")]), "exact")
    write_lmms_eval(run, cfg, {"gqa": gqa})
    pope = score_records(
        _records("pope", [("yes", ["yes"], "random", ""), ("no", ["yes"], "random", "")]), "pope"
    )
    path = write_lmms_eval(run, cfg, {"pope": pope})
    content = json.loads(path.read_text())
    assert content["results"]["gqa"] == {
        "alias": "gqa",
        "exact_match,none": 0.5,
        "exact_match_stderr,none": 0.5,
    }
    assert content["results"]["pope"]["pope_f1_score,none"] == pytest.approx(2 / 3)
    assert content["results"]["pope"]["pope_yes_ratio,none"] == 0.5  # of the predictions
    assert content["n-samples"]["pope"] == {"original": 2, "effective": 2}
    assert content["configs"]["gqa"]["generation_kwargs"] == {"max_new_tokens": 16, "do_sample": False}
    assert "exact match" in content["definitions"]["gqa"]["metric"]


def test_question_file_metric_and_stored_group_overrides_are_checked(compose, tmp_path):
    from mmcompress.config import apply_overrides

    with pytest.raises(UserError, match=r"benchmark.llava_questions.metric='mme' is not one of"):
        check_benchmarks(compose("eval.benchmarks=[llava_questions]", "benchmark.llava_questions.metric=mme"))
    with pytest.raises(
        UserError, match=r"pruning is a config group.*init_from=RUN stages=\[eval\] pruning=topk"
    ):
        apply_overrides(compose(), ["pruning=topk"])


@pytest.mark.slow
def test_eval_cli_predictions_only_and_errors_leave_the_run_intact(fast_run, bench_root, tmp_path):
    """A question file without answers yields predictions only; a bad benchmark path is a one-line error
    that changes nothing in the run directory."""
    import hashlib
    import shutil

    from tests.conftest import cli

    run = tmp_path / "run"
    shutil.copytree(fast_run, run)
    root = bench_root[0]
    unanswered = root / "llava" / "unanswered.jsonl"
    lines = [json.loads(line) for line in (root / "llava" / "questions.jsonl").read_text().splitlines()]
    unanswered.write_text(
        "".join(json.dumps({k: v for k, v in q.items() if k != "answer"}) + "\n" for q in lines)
    )

    def checksums():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()}

    before = checksums()
    bad = cli(
        "eval", str(run), "eval.benchmarks=[pope]", f"paths.benchmarks={tmp_path / 'nowhere'}", check=False
    )
    assert bad.returncode == 1 and "set benchmark.pope.questions" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    unknown = cli("eval", str(run), "eval.benchmarks=[popee]", check=False)
    assert unknown.returncode == 2 and "unknown benchmark 'popee'" in unknown.stdout + unknown.stderr
    assert checksums() == before

    cli(
        "eval",
        str(run),
        "eval.benchmarks=[llava_questions]",
        f"benchmark.llava_questions.questions={unanswered}",
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["scores"]["llava_questions"]["metric"] is None
    assert summary["scores"]["llava_questions"]["n"] == len(lines)
    assert (
        summary["scores"]["synthvqa"]
        == json.loads((fast_run / "summary.json").read_text())["scores"]["synthvqa"]
    )
    records = [json.loads(line) for line in (run / "eval" / "llava_questions.jsonl").read_text().splitlines()]
    assert all("prediction" in r and "score" not in r for r in records)
