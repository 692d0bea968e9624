"""lmms-eval's results layout: eval/lmms_eval_results.json with `results[task]["<metric>,none"]` as
lmms-eval writes it, so its readers find mmcompress's numbers."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from omegaconf import DictConfig

import mmcompress
from mmcompress.data.benchmarks import BENCHMARKS
from mmcompress.rundir import RunDir, atomic_write

LMMS_EVAL_FILE = "lmms_eval_results.json"


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
