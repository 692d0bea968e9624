"""The eval stage: batched greedy answers to each benchmark of `eval.benchmarks`, scored by its own metric.

Every benchmark writes eval/<name>.jsonl (one line per question), its scores into summary.json and its
headline metrics into eval/lmms_eval_results.json in lmms-eval's layout; every number carries its
definition. The training data's held-out split is a benchmark too: there `overall` and the blind baselines
are means over categories, so the category mix cannot move them.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import torch
from omegaconf import DictConfig

import mmcompress
from mmcompress import data as datasets
from mmcompress.console import console, progress
from mmcompress.data.benchmarks import (
    BENCHMARKS,
    EvalSet,
    EvalSetBuilder,
    check_benchmarks,
    from_split,
    load_benchmark,
    load_llava_questions,
    read_json,
)
from mmcompress.data.llava import encode_prompts, open_image, pad
from mmcompress.errors import UserError
from mmcompress.features import split_features
from mmcompress.metrics import (
    ANLS_DEFINITION,
    EXACT_MATCH_DEFINITION,
    OPTION_DEFINITION,
    VQA_DEFINITION,
    anls,
    exact_match,
    mean,
    mme_answer,
    mme_scores,
    normalize_vqa_answer,
    option_letter,
    pope_answer,
    pope_scores,
    vqa_accuracy,
)
from mmcompress.model import MultimodalLM
from mmcompress.rundir import RunDir, atomic_write
from mmcompress.tracking import Tracker

OVERALL_DEFINITION = "unweighted mean over categories of the per-category mean score"
MAJORITY_DEFINITION = "blind baseline: each category's most frequent train answer, scored on this split"
CHANCE_DEFINITION = "uniform guess among each category's distinct train answers"
LMMS_EVAL_FILE = "lmms_eval_results.json"


# ---- scoring: per question (prediction, references) → (score, the answer as the metric parsed it) -----------
def _parsed(parse, reference=str.lower):
    """A metric that parses the answer first: scored once, the parsed answer kept for the record."""

    def score(prediction: str, answers: tuple[str, ...]) -> tuple[float, str | None]:
        parsed = parse(prediction)
        return float(parsed == reference(answers[0])), parsed

    return score


QUESTION_SCORES = {
    "vqa": lambda prediction, answers: (vqa_accuracy(prediction, answers), None),
    "exact": lambda prediction, answers: (exact_match(prediction, answers[0]), None),
    "anls": lambda prediction, answers: (anls(prediction, answers), None),
    "option": _parsed(option_letter, reference=str),  # references are option letters already
    "pope": _parsed(pope_answer),
    "mme": _parsed(mme_answer),
}
METRIC_DEFINITIONS = {
    "vqa": VQA_DEFINITION,
    "exact": EXACT_MATCH_DEFINITION,
    "anls": ANLS_DEFINITION,
    "option": OPTION_DEFINITION,
    "pope": "POPE: yes/no answers parsed as LLaVA's eval_pope does, scored against the label",
    "mme": "MME: yes/no answers parsed as MME's evaluator does, scored against the label",
}


def score_records(records: list[dict], metric: str, *, overall: str = "questions") -> dict:
    """Benchmark scores from records that already hold each question's `score` (and `parsed`).

    `overall` is the mean over `questions` or over `categories`; POPE's headline is F1 averaged over its
    splits (as LLaVA reports it) and MME's the perception score, each with its full breakdown."""
    by_category: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_category[r["category"]].append(r["score"])
    categories = {c: round(mean(v), 4) for c, v in sorted(by_category.items())}
    scores = {
        "metric": metric,
        "metric_definition": METRIC_DEFINITIONS[metric],
        "n": len(records),
        "categories": categories,
        "category_n": {c: len(v) for c, v in sorted(by_category.items())},
        "category_definition": "mean score of the category's questions",
    }
    if overall == "categories":
        scores |= {"overall": round(mean(categories.values()), 4), "overall_definition": OVERALL_DEFINITION}
    else:
        values = [r["score"] for r in records]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        scores |= {
            "overall": round(mean(values), 4),
            "overall_definition": "mean score over questions",
            "stderr": round(spread / math.sqrt(len(values)), 4),  # of the mean over questions
        }
    if metric in ("pope", "mme"):
        scores.pop("stderr")  # their headlines are not means over questions
    if metric == "pope":
        pope = pope_scores(
            [r["prediction"] for r in records],
            [r["answer"] for r in records],
            [r["category"] for r in records],
        )
        scores |= {
            "pope": pope,
            "overall": round(pope["mean_over_splits"]["f1"], 4),
            "overall_definition": "F1 ('yes' positive) averaged over the POPE splits, as LLaVA reports POPE",
            "category_definition": "accuracy of the split's questions",
        }
    if metric == "mme":
        mme = mme_scores(
            [r["prediction"] for r in records],
            [r["answer"] for r in records],
            [r["category"] for r in records],
            [r["group"] for r in records],
        )
        scores |= {
            "mme": mme,
            "overall": round(mme["perception"], 2),
            "overall_definition": mme["definitions"]["perception"],
            "categories": {c: round(v["score"], 2) for c, v in mme["categories"].items()},
            "category_definition": mme["definitions"]["score"],
        }
    return scores


# ---- the stage ----------------------------------------------------------------------------------------------
def evaluate(
    cfg: DictConfig,
    run: RunDir,
    tracker: Tracker | None = None,
    *,
    model: MultimodalLM | None = None,
    device=None,
) -> dict:
    """Score every benchmark of `eval.benchmarks`; write their jsonl, summary scores and lmms-eval results."""
    from mmcompress.assembly import load_model

    check_benchmarks(cfg)
    model = (model or load_model(cfg, run)).to(device or "cpu").eval()
    scored = {}
    for name in cfg.eval.benchmarks:
        if name == cfg.data.name:
            scores, records = _evaluate_training_data(model, cfg, run)
        else:
            scores, records = _evaluate_benchmark(model, cfg, run, name)
        scored[name] = scores
        _print(name, scores, run.summary().get("baselines", {}).get(name) if name == cfg.data.name else None)
        if tracker is not None:
            tracker.log_table(f"{name}/predictions", records[: cfg.eval.log_examples])
        if tracker is not None and "overall" in scores:
            tracker.log_summary(
                {
                    f"{name}/overall": scores["overall"],
                    **{f"{name}/{c}": v for c, v in scores["categories"].items()},
                }
            )
    write_lmms_eval(run, cfg, scored)
    return scored


def _evaluate_training_data(model: MultimodalLM, cfg: DictConfig, run: RunDir) -> tuple[dict, list[dict]]:
    """The training data's held-out split: scores, blind baselines, val scores, tokens and FLOPs."""
    name = cfg.data.name
    evalset = from_split(datasets.load(cfg, cfg.eval.split), cfg.eval.split, cfg.eval.max_samples)
    records, scores, visual_counts = score_split(model, evalset, cfg)
    _write_records(run, name, records)
    baselines = blind_baselines(datasets.load(cfg, "train"), records)
    scores["margin_over_majority"] = {
        **{
            c: round(scores["categories"][c] - baselines["categories"][c]["majority"], 4)
            for c in scores["categories"]
        },
        "overall": round(scores["overall"] - baselines["majority"], 4),
    }
    summary = {
        "scores": {name: scores},
        "baselines": {name: baselines},
        "visual_tokens": _token_stats(visual_counts),
    }
    if cfg.eval.val and cfg.eval.split != "val":
        val = from_split(datasets.load(cfg, "val"), "val", cfg.eval.max_samples)
        summary["val_scores"] = {name: score_split(model, val, cfg)[1]}
    summary["flops"] = question_flops(model, evalset)
    summary["llm_prefill_flops"] = prefill_flops_summary(model, evalset, records)
    run.update_summary(**summary)
    return scores, records


def _evaluate_benchmark(
    model: MultimodalLM, cfg: DictConfig, run: RunDir, name: str
) -> tuple[dict, list[dict]]:
    """A standard benchmark from local files; images are encoded batch by batch, so memory stays flat."""
    b = cfg.benchmark[name]
    evalset = load_benchmark(cfg, name, cfg.data.image_position)
    metric = b.get("metric") or BENCHMARKS[name].metric
    if not all(q.answers for q in evalset.questions):
        metric = None  # a question file without references: predictions only
    records, counts = answer_questions(model, evalset, None, cfg.eval.batch_size, b.max_new_tokens)
    if metric is None:
        scores = {
            "metric": None,
            "metric_definition": "no reference answers: predictions only",
            "n": len(records),
        }
    else:
        _score_each(records, evalset, metric)
        scores = score_records(records, metric)
    scores["visual_tokens"] = _token_stats(counts)
    scores["prompt_suffix"] = b.get("prompt_suffix") or ""
    _write_records(run, name, records)
    run.update_summary(scores={name: scores})
    return scores, records


def score_split(
    model: MultimodalLM, evalset: EvalSet, cfg: DictConfig
) -> tuple[list[dict], dict, torch.Tensor]:
    """Greedy answers to a training-data split (features from the store), VQA-scored per category; its
    yes/no questions are also scored as POPE is."""
    device = next(model.parameters()).device
    features = split_features(
        dict(model.experts), evalset.images, cfg, device, f"{evalset.name} images", model.signal_spec
    )
    records, counts = answer_questions(model, evalset, features, cfg.eval.batch_size, cfg.eval.max_new_tokens)
    _score_each(records, evalset, "vqa")
    scores = score_records(records, "vqa", overall="categories") | {"split": evalset.name}
    yes_no = [r for r in records if normalize_vqa_answer(r["answer"]) in ("yes", "no")]
    if yes_no:
        scores["yes_no"] = pope_scores(
            [r["prediction"] for r in yes_no],
            [normalize_vqa_answer(r["answer"]) for r in yes_no],
            [r["category"] for r in yes_no],
        )
        scores["yes_no"]["definitions"]["splits"] = (
            "the categories whose answers are yes/no, each scored as a POPE split"
        )
    return records, scores, counts


def _score_each(records: list[dict], evalset: EvalSet, metric: str) -> None:
    for record, question in zip(records, evalset.questions, strict=True):
        record["score"], parsed = QUESTION_SCORES[metric](record["prediction"], question.answers)
        if parsed is not None:
            record["parsed"] = parsed


def _write_records(run: RunDir, name: str, records: list[dict]) -> None:
    atomic_write(run.path / "eval" / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def _token_stats(counts: torch.Tensor) -> dict:
    counts = counts.double()
    return {
        "mean": counts.mean().item(),
        "min": int(counts.min()),
        "max": int(counts.max()),
        "definition": "visual tokens fed to the LLM per image",
    }


# ---- lmms-eval's results layout -----------------------------------------------------------------------------
def lmms_eval_metrics(name: str, scores: dict) -> dict[str, float | str]:
    """A benchmark's headline numbers under lmms-eval's metric names (`<metric>,none`)."""
    metric = scores.get("metric")
    if metric == "pope":
        pooled = scores["pope"]["pooled"]
        names = {
            "accuracy": "pope_accuracy",
            "precision": "pope_precision",
            "recall": "pope_recall",
            "f1": "pope_f1_score",
            "yes_ratio": "pope_yes_ratio",
        }
        return {f"{names[k]},none": pooled[k] for k in names} | {
            f"{names[k]}_stderr,none": "N/A" for k in names
        }
    if metric == "mme":  # lmms-eval spells perception "percetion"; kept so its readers find the number
        return {
            "mme_percetion_score,none": scores["mme"]["perception"],
            "mme_cognition_score,none": scores["mme"]["cognition"],
        }
    if metric is None:
        return {}
    key = "anls" if metric == "anls" else "exact_match"  # lmms-eval names VQA accuracy exact_match too
    return {f"{key},none": scores["overall"], f"{key}_stderr,none": scores.get("stderr", "N/A")}


def write_lmms_eval(run: RunDir, cfg: DictConfig, scored: dict[str, dict]) -> Path:
    """eval/lmms_eval_results.json: `results[task]["<metric>,none"]` as lmms-eval writes it, merged with
    the benchmarks scored earlier, plus each number's definition."""
    path = run.path / "eval" / LMMS_EVAL_FILE
    previous = json.loads(path.read_text()) if path.is_file() else {}
    results, configs, samples, definitions = (
        previous.get(k, {}) for k in ("results", "configs", "n-samples", "definitions")
    )
    for name, scores in scored.items():
        task = BENCHMARKS[name].lmms_task if name in BENCHMARKS else name
        results[task] = {"alias": task, **lmms_eval_metrics(name, scores)}
        max_new = cfg.benchmark[name].max_new_tokens if name in BENCHMARKS else cfg.eval.max_new_tokens
        configs[task] = {
            "task": task,
            "output_type": "generate_until",
            "generation_kwargs": {"max_new_tokens": int(max_new), "do_sample": False},
            "post_prompt": scores.get("prompt_suffix", ""),
        }
        samples[task] = {"original": scores["n"], "effective": scores["n"]}
        definitions[task] = {
            "metric": scores["metric_definition"],
            "overall": scores.get("overall_definition"),
        }
    content = {
        "results": results,
        "configs": configs,
        "versions": {task: mmcompress.__version__ for task in results},
        "n-shot": {task: 0 for task in results},
        "higher_is_better": {
            task: {k.split(",")[0]: True for k in r if k.endswith(",none") and "stderr" not in k}
            for task, r in results.items()
        },
        "n-samples": samples,
        "config": {"model": "mmcompress", "model_args": f"run={run.path}", "batch_size": cfg.eval.batch_size},
        "model_name": run.path.name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "definitions": definitions,
    }
    atomic_write(path, json.dumps(content, indent=2) + "\n")
    return path


@torch.no_grad()
def question_flops(model: MultimodalLM, evalset: EvalSet) -> dict:
    """Forward FLOPs to answer one question: encode its image, project, and prefill the prompt."""
    from torch.utils.flop_counter import FlopCounterMode

    question = evalset.questions[0]
    device = next(model.parameters()).device
    image = open_image(evalset.images[question.image])
    pixels = {n: e.preprocess([image]).to(device) for n, e in model.experts.items()}
    ids = torch.tensor([encode_prompts([question], model.tokenizer)[0]], device=device)  # (1, L)
    with FlopCounterMode(display=False) as counter:
        model.generate(ids, torch.ones_like(ids), model.encode_images(pixels), max_new_tokens=1)
    return {
        "per_question": counter.get_total_flops(),
        "definition": "forward FLOPs (a multiply-add counts 2) to encode the image, project its tokens and "
        "prefill the prompt of one question, batch 1; counted by torch.utils.flop_counter",
    }


@torch.no_grad()
def prefill_flops(llm, lengths: list[int]) -> list[int]:
    """LLM prefill FLOPs of a batch-1 prompt of each length (one next-token logit).

    Linear layers cost ∝ L and attention ∝ L², so the count is exactly a quadratic in L: three forwards
    under torch.utils.flop_counter fix it, and every length follows without running the LLM again."""
    from fractions import Fraction

    from torch.utils.flop_counter import FlopCounterMode

    width = llm.get_input_embeddings().weight
    points = (8, 16, 24)
    counted = []
    for length in points:
        embeds = width.new_zeros(1, length, width.shape[1])  # (1, L, D)
        with FlopCounterMode(display=False) as counter:
            llm(inputs_embeds=embeds, use_cache=False, logits_to_keep=1)
        counted.append(counter.get_total_flops())

    def at(length: int) -> int:  # Lagrange interpolation through the three counted points
        total = Fraction(0)
        for i, (xi, yi) in enumerate(zip(points, counted, strict=True)):
            term = Fraction(yi)
            for j, xj in enumerate(points):
                if j != i:
                    term *= Fraction(length - xj, xi - xj)
            total += term
        return int(total)

    return [at(length) for length in lengths]


def prefill_flops_summary(model: MultimodalLM, evalset: EvalSet, records: list[dict]) -> dict:
    """Prefill FLOPs per question with the visual tokens actually fed, and with the unpruned count."""
    prompts = encode_prompts(evalset.questions, model.tokenizer)  # records are in question order
    text = [len(p) - 1 for p in prompts]  # the <image> placeholder is replaced by the visual tokens
    full = math.prod(model.fusion.token_grid)
    fed = prefill_flops(model.llm, [t + r["visual_tokens"] for t, r in zip(text, records, strict=True)])
    unpruned = prefill_flops(model.llm, [t + full for t in text])
    mean, unpruned_mean = sum(fed) / len(fed), sum(unpruned) / len(unpruned)
    return {
        "mean": mean,
        "min": min(fed),
        "max": max(fed),
        "unpruned_mean": unpruned_mean,
        "ratio": mean / unpruned_mean,
        "definition": "forward FLOPs of the LLM prefill (prompt with its visual tokens, batch 1, one "
        "next-token logit) per evaluated question, from torch.utils.flop_counter; unpruned: the same "
        f"prompts with all {full} fused visual tokens",
    }


@torch.no_grad()
def answer_questions(
    model: MultimodalLM,
    evalset: EvalSet,
    features: dict | None,
    batch_size: int,
    max_new_tokens: int,
) -> tuple[list[dict], torch.Tensor]:
    """Greedy answers, batch by batch, as records; image features from `features` (one row per image) when
    given, else each batch's images are read and encoded. Returns the records and (n,) visual tokens fed."""
    device = next(model.parameters()).device
    tokenizer = model.tokenizer
    questions = evalset.questions
    prompts = encode_prompts(questions, tokenizer)
    records, visual_counts = [], []
    with progress() as bar:
        task = bar.add_task("eval", total=len(questions), info=evalset.name)
        for lo in range(0, len(questions), batch_size):
            chunk = questions[lo : lo + batch_size]
            if features is not None:
                image_index = torch.tensor([q.image for q in chunk], device=device)
                batch_features = {name: f[image_index] for name, f in features.items()}  # (B, N, C) each
            else:
                images = [open_image(evalset.images[q.image]) for q in chunk]
                pixels = {name: e.preprocess(images).to(device) for name, e in model.experts.items()}
                batch_features = model.encode_images(pixels)
            ids = pad(prompts[lo : lo + batch_size], tokenizer.pad_token_id, side="left")  # (B, L)
            lengths = torch.tensor([len(p) for p in prompts[lo : lo + batch_size]])
            mask = (
                torch.arange(ids.shape[1])[None] >= (ids.shape[1] - lengths)[:, None]
            )  # (B, L) left padding
            generated, counts = model.generate(
                ids.to(device), mask.long().to(device), batch_features, max_new_tokens
            )
            visual_counts.append(counts.cpu())
            answers = tokenizer.batch_decode(generated, skip_special_tokens=True)
            for question, answer, count in zip(chunk, answers, counts.tolist(), strict=True):
                records.append(
                    {
                        "id": question.id,
                        "category": question.category,
                        "question": question.text,
                        "answer": question.answers[0] if question.answers else None,
                        **({"answers": list(question.answers)} if len(set(question.answers)) > 1 else {}),
                        **({"group": question.group} if question.group else {}),
                        "image": str(evalset.images[question.image]),
                        "prediction": answer.strip(),
                        "visual_tokens": count,
                    }
                )
            bar.update(task, advance=len(chunk))
    return records, torch.cat(visual_counts)


def blind_baselines(train, records: list[dict]) -> dict:
    """What a model that ignores the image reaches: per-category majority answer, and chance."""
    answers: dict[str, Counter] = defaultdict(Counter)
    for s in train.samples:
        answers[s.category][normalize_vqa_answer(s.answer)] += 1
    per_category = {}
    for category in sorted({r["category"] for r in records}):
        seen = answers.get(category, Counter())
        majority = seen.most_common(1)[0][0] if seen else ""
        rows = [r for r in records if r["category"] == category]
        per_category[category] = {
            "majority_answer": majority,
            "majority": round(mean(vqa_accuracy(majority, [r["answer"]] * 10) for r in rows), 4),
            "chance": round(1 / max(1, len(seen)), 4),
        }
    average = lambda key: round(mean(v[key] for v in per_category.values()), 4)  # noqa: E731
    return {
        "majority": average("majority"),
        "chance": average("chance"),
        "definition": {
            "majority": MAJORITY_DEFINITION,
            "chance": CHANCE_DEFINITION,
            "overall": OVERALL_DEFINITION,
        },
        "categories": per_category,
    }


def _print(benchmark: str, scores: dict, baselines: dict | None) -> None:
    from rich.table import Table

    if scores.get("metric") is None:
        console.print(f"{benchmark}: {scores['n']} predictions (no reference answers to score)")
        return
    number = lambda v: f"{v:.3f}" if abs(v) <= 1 else f"{v:.1f}"  # noqa: E731  MME scores run to 2000
    split = f" · {scores['split']}" if "split" in scores else ""
    table = Table(
        title=f"{benchmark}{split} ({scores['n']} questions, {scores['metric']})",
        caption=f"overall: {scores['overall_definition']}; categories: {scores['category_definition']}",
    )
    columns = ["category", "n", "score"] + (["blind majority", "margin"] if baselines else [])
    for column in columns:
        table.add_column(column, justify="left" if column == "category" else "right")
    for c, value in scores["categories"].items():
        row = [c, str(scores["category_n"].get(c, "")), number(value)]
        if baselines:
            majority = baselines["categories"][c]["majority"]
            row += [f"{majority:.3f}", f"{value - majority:+.3f}"]
        table.add_row(*row)
    last = ["[bold]overall[/]", str(scores["n"]), f"[bold]{number(scores['overall'])}"]
    if baselines:
        last += [f"{baselines['majority']:.3f}", f"{scores['overall'] - baselines['majority']:+.3f}"]
    table.add_row(*last)
    console.print(table)


def load_run(run_path: Path, overrides: list[str]) -> tuple[DictConfig, RunDir]:
    """A finished run's config with `overrides` applied. Where benchmark files live (`benchmark.*`,
    `paths.benchmarks`) belongs to the machine, not the run: it comes from the packaged config, as do
    evaluation settings added since the run was made."""
    from omegaconf import OmegaConf

    from mmcompress.config import apply_overrides, extra_config_dirs, load_config

    run = RunDir(run_path)
    cfg = run.config()
    defaults = load_config([f"data={cfg.get('choices', {}).get('data', 'synthvqa')}"], extra_config_dirs())
    cfg = OmegaConf.merge({"eval": defaults.eval}, cfg)
    cfg.benchmark = defaults.benchmark
    cfg.paths.benchmarks = defaults.paths.benchmarks
    cfg = apply_overrides(cfg, overrides) if overrides else cfg
    OmegaConf.set_readonly(cfg, False)
    return cfg, run


def evaluate_run_dir(run_path: Path, overrides: list[str]) -> dict:
    """`mmcompress eval RUN_DIR [OVERRIDES]`: score a finished run's saved model on eval.benchmarks."""
    from omegaconf import OmegaConf

    from mmcompress.stages import resolve_device

    cfg, run = load_run(run_path, overrides)
    check_benchmarks(cfg)
    tracker = Tracker(run.path, OmegaConf.merge(cfg, {"logger": {"name": "none"}}), run.path.name)
    return evaluate(cfg, run, tracker, device=resolve_device(cfg.device))


# ---- predict: the same preprocessing, template and generation as evaluation ---------------------------------
def _predict(
    run_dir: Path, overrides: list[str], fill, max_new_tokens: int
) -> tuple[list[dict], RunDir, str]:

    from mmcompress.assembly import load_model
    from mmcompress.stages import resolve_device

    cfg, run = load_run(run_dir, overrides)
    options = {"questions": "--questions", "image_folder": "--image-folder", "image": "--image"}
    build = EvalSetBuilder("predict", cfg.data.image_position, "", lambda field: options.get(field, field))
    fill(build)
    evalset = build.build(None, "questions")
    model = load_model(cfg, run).to(resolve_device(cfg.device)).eval()
    records, _ = answer_questions(model, evalset, None, cfg.eval.batch_size, max_new_tokens)
    return records, run


def predict_one(run_dir: Path, overrides: list[str], image: Path, question: str, max_new_tokens: int) -> str:
    """The run's answer to one question about one image."""
    if not image.is_file():
        what = "is a directory, not an image file" if image.is_dir() else "does not exist"
        raise UserError(f"--image {image} {what}; give the path of an image file")
    records, _ = _predict(run_dir, overrides, lambda b: b.add("0", image, question, []), max_new_tokens)
    return records[0]["prediction"]


def predict_file(
    run_dir: Path,
    overrides: list[str],
    questions: Path,
    image_folder: Path | None,
    out: Path | None,
    max_new_tokens: int,
) -> Path:
    """Answers to a LLaVA question jsonl, written in LLaVA's answer format (question_id, prompt, text)."""
    source = {"questions": str(questions), "image_folder": str(image_folder) if image_folder else None}
    records, run = _predict(
        run_dir, overrides, lambda b: load_llava_questions(DictConfig(source), b), max_new_tokens
    )
    raw = read_json(questions, "--questions", lines=True)
    out = out or run.path / "predict" / f"{questions.stem}.jsonl"
    lines = [
        {
            "question_id": line.get("question_id", n),
            "prompt": line.get("text", ""),
            "text": record["prediction"],
            "model_id": run.path.name,
            "visual_tokens": record["visual_tokens"],
            "metadata": {},
        }
        for n, (line, record) in enumerate(zip(raw, records, strict=True))
    ]
    atomic_write(out, "".join(json.dumps(line) + "\n" for line in lines))
    return out
