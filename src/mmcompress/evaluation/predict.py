"""`mmcompress predict`: the same preprocessing, chat template and greedy generation as evaluation, on an
image and a question, or on a LLaVA question file."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from mmcompress.data.benchmarks import EvalSetBuilder, load_llava_questions, read_json
from mmcompress.data.loading import worker_count
from mmcompress.errors import UserError
from mmcompress.evaluation.answering import answer_questions
from mmcompress.evaluation.stage import load_run
from mmcompress.model.build import load_model, resolve_device
from mmcompress.rundir import RunDir, atomic_write


def _predict(run_dir: Path, overrides: list[str], fill, max_new_tokens: int) -> tuple[list[dict], RunDir]:
    cfg, run = load_run(run_dir, overrides)
    options = {"questions": "--questions", "image_folder": "--image-folder", "image": "--image"}
    build = EvalSetBuilder("predict", cfg.data.image_position, "", lambda field: options.get(field, field))
    fill(build)
    evalset = build.build(None, "questions")
    model = load_model(cfg, run).to(resolve_device(cfg.device)).eval()
    records, _ = answer_questions(
        model, evalset, None, cfg.eval.batch_size, max_new_tokens, worker_count(cfg.train.num_workers)
    )
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
