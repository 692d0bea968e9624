"""The eval stage: batched greedy answers to each benchmark of `eval.benchmarks`, scored by its own metric.

Every benchmark writes eval/<name>.jsonl (one line per question), its scores into summary.json and its
headline metrics into eval/lmms_eval_results.json in lmms-eval's layout; every number carries its
definition. The training data's held-out split is a benchmark too: there `overall` and the blind baselines
are means over categories, so the category mix cannot move them.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmcompress.config import apply_overrides, extra_config_dirs, load_config
from mmcompress.console import console
from mmcompress.data import splits
from mmcompress.data.benchmarks import BENCHMARKS, check_benchmarks, from_split, load_benchmark
from mmcompress.data.loading import worker_count
from mmcompress.evaluation.answering import answer_questions, score_split
from mmcompress.evaluation.cost import prefill_flops_summary, question_flops, token_stats
from mmcompress.evaluation.lmms_eval import write_lmms_eval
from mmcompress.evaluation.scoring import blind_baselines, score_each, score_records
from mmcompress.model.build import load_model, resolve_device
from mmcompress.model.multimodal import MultimodalLM
from mmcompress.rundir import RunDir, atomic_write
from mmcompress.tracking import Tracker


def evaluate(
    cfg: DictConfig,
    run: RunDir,
    tracker: Tracker | None = None,
    *,
    model: MultimodalLM | None = None,
    device=None,
) -> dict:
    """Score every benchmark of `eval.benchmarks`; write their jsonl, summary scores and lmms-eval results."""
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
    evalset = from_split(splits.load(cfg, cfg.eval.split), cfg.eval.split, cfg.eval.max_samples)
    records, scores, visual_counts = score_split(model, evalset, cfg)
    _write_records(run, name, records)
    baselines = blind_baselines(splits.load(cfg, "train"), records)
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
        "visual_tokens": token_stats(visual_counts),
    }
    if cfg.eval.val and cfg.eval.split != "val":
        val = from_split(splits.load(cfg, "val"), "val", cfg.eval.max_samples)
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
    records, counts = answer_questions(
        model, evalset, None, cfg.eval.batch_size, b.max_new_tokens, worker_count(cfg.train.num_workers)
    )
    if metric is None:
        scores = {
            "metric": None,
            "metric_definition": "no reference answers: predictions only",
            "n": len(records),
        }
    else:
        score_each(records, evalset, metric)
        scores = score_records(records, metric)
    scores["visual_tokens"] = token_stats(counts)
    scores["prompt_suffix"] = b.get("prompt_suffix") or ""
    _write_records(run, name, records)
    run.update_summary(scores={name: scores})
    return scores, records


def _write_records(run: RunDir, name: str, records: list[dict]) -> None:
    atomic_write(run.path / "eval" / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))


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
    evaluation and data-loading settings added since the run was made (e.g. train.num_workers)."""
    run = RunDir(run_path)
    cfg = run.config()
    defaults = load_config([f"data={cfg.get('choices', {}).get('data', 'synthvqa')}"], extra_config_dirs())
    cfg = OmegaConf.merge({"eval": defaults.eval, "train": defaults.train}, cfg)
    cfg.benchmark = defaults.benchmark
    cfg.paths.benchmarks = defaults.paths.benchmarks
    cfg = apply_overrides(cfg, overrides) if overrides else cfg
    OmegaConf.set_readonly(cfg, False)
    return cfg, run


def evaluate_run_dir(run_path: Path, overrides: list[str]) -> dict:
    """`mmcompress eval RUN_DIR [OVERRIDES]`: score a finished run's saved model on eval.benchmarks."""
    cfg, run = load_run(run_path, overrides)
    check_benchmarks(cfg)
    tracker = Tracker(run.path, OmegaConf.merge(cfg, {"logger": {"name": "none"}}), run.path.name)
    return evaluate(cfg, run, tracker, device=resolve_device(cfg.device))
