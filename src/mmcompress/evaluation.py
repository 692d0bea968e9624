"""The eval stage: batched greedy answers on a split, scored per category next to blind baselines.

Every number written carries its definition and the number of questions behind it. `overall` and the
baselines are means over categories, so the category mix cannot move them.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import torch
from omegaconf import DictConfig

from mmcompress import data as datasets
from mmcompress.console import console, progress
from mmcompress.data.llava import Split, encode_prompts, open_image, pad
from mmcompress.features import split_features
from mmcompress.metrics import EXACT_MATCH_DEFINITION, exact_match, normalize_answer
from mmcompress.model import MultimodalLM
from mmcompress.rundir import RunDir, atomic_write
from mmcompress.tracking import Tracker

OVERALL_DEFINITION = "unweighted mean over categories of per-category accuracy"
MAJORITY_DEFINITION = "blind baseline: each category's most frequent train answer, scored on this split"
CHANCE_DEFINITION = "uniform guess among each category's distinct train answers"


def evaluate(
    cfg: DictConfig,
    run: RunDir,
    tracker: Tracker | None = None,
    *,
    model: MultimodalLM | None = None,
    device=None,
) -> dict:
    """Answer every question of `cfg.eval.split`, write eval/<benchmark>.jsonl and add scores to the summary."""
    from mmcompress.assembly import load_model

    benchmark = cfg.data.name
    split = datasets.load(cfg, cfg.eval.split)
    model = (model or load_model(cfg, run)).to(device or "cpu").eval()
    records, scores, visual_counts = score_split(model, split, cfg, cfg.eval.max_samples)
    atomic_write(run.path / "eval" / f"{benchmark}.jsonl", "".join(json.dumps(r) + "\n" for r in records))

    baselines = blind_baselines(datasets.load(cfg, "train"), records)
    scores["margin_over_majority"] = {
        **{
            c: round(scores["categories"][c] - baselines["categories"][c]["majority"], 4)
            for c in scores["categories"]
        },
        "overall": round(scores["overall"] - baselines["majority"], 4),
    }
    counts = visual_counts.double()
    visual = {
        "mean": counts.mean().item(),
        "min": int(counts.min()),
        "max": int(counts.max()),
        "definition": "visual tokens fed to the LLM per image",
    }
    summary = {"scores": {benchmark: scores}, "baselines": {benchmark: baselines}, "visual_tokens": visual}
    if cfg.eval.val and cfg.eval.split != "val":
        _, summary["val_scores"], _ = score_split(model, datasets.load(cfg, "val"), cfg, cfg.eval.max_samples)
        summary["val_scores"] = {benchmark: summary["val_scores"]}
    summary["flops"] = question_flops(model, split)
    summary["llm_prefill_flops"] = prefill_flops_summary(model, split, records)
    run.update_summary(**summary)
    _print(benchmark, scores, baselines)
    if tracker is not None:
        tracker.log_table(f"{benchmark}/predictions", records[: cfg.eval.log_examples])
        tracker.log_summary(
            {
                f"{benchmark}/overall": scores["overall"],
                **{f"{benchmark}/{c}": v for c, v in scores["categories"].items()},
            }
        )
    return scores


def score_split(
    model: MultimodalLM, split: Split, cfg: DictConfig, max_samples: int | None = None
) -> tuple[list[dict], dict, torch.Tensor]:
    """Greedy answers to the first `max_samples` questions of `split` (all by default), scored per category."""
    samples = split.samples[:max_samples] if max_samples else split.samples
    device = next(model.parameters()).device
    features = split_features(
        dict(model.experts), split.images, cfg, device, f"{split.name} images", model.signal_spec
    )
    records, visual_counts = _answer(
        model, split, samples, features, cfg.eval.batch_size, cfg.eval.max_new_tokens
    )
    for record, count in zip(records, visual_counts.tolist(), strict=True):
        record["visual_tokens"] = count
    return records, _scores(records, split.name), visual_counts


@torch.no_grad()
def question_flops(model: MultimodalLM, split: Split) -> dict:
    """Forward FLOPs to answer one question: encode its image, project, and prefill the prompt."""
    from torch.utils.flop_counter import FlopCounterMode

    sample = split.samples[0]
    device = next(model.parameters()).device
    pixels = {
        n: e.preprocess([open_image(split.images[sample.image])]).to(device) for n, e in model.experts.items()
    }
    ids = torch.tensor([encode_prompts([sample], model.tokenizer)[0]], device=device)  # (1, L)
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


def prefill_flops_summary(model: MultimodalLM, split: Split, records: list[dict]) -> dict:
    """Prefill FLOPs per question with the visual tokens actually fed, and with the unpruned count."""
    samples = {s.id: s for s in split.samples}
    prompts = encode_prompts([samples[r["id"]] for r in records], model.tokenizer)
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
def _answer(
    model: MultimodalLM,
    split: Split,
    samples,
    features: dict[str, torch.Tensor] | None,
    batch_size: int,
    max_new_tokens: int,
):
    """Greedy answers, batch by batch; image features from `features` (one row per image) when given."""
    device = next(model.parameters()).device
    tokenizer = model.tokenizer
    prompts = encode_prompts(samples, tokenizer)
    records, visual_counts = [], []
    with progress() as bar:
        task = bar.add_task("eval", total=len(samples), info=split.name)
        for lo in range(0, len(samples), batch_size):
            chunk = samples[lo : lo + batch_size]
            if features is not None:
                image_index = torch.tensor([s.image for s in chunk], device=device)
                batch_features = {name: f[image_index] for name, f in features.items()}  # (B, N, C) each
            else:
                images = [open_image(split.images[s.image]) for s in chunk]
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
            for sample, answer in zip(
                chunk, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True
            ):
                prediction = answer.strip()
                records.append(
                    {
                        "id": sample.id,
                        "category": sample.category,
                        "question": next(m["content"] for m in sample.messages if m["role"] == "user"),
                        "answer": sample.answer,
                        "prediction": prediction,
                        "score": exact_match(prediction, sample.answer),
                    }
                )
            bar.update(task, advance=len(chunk))
    return records, torch.cat(visual_counts)


def _scores(records: list[dict], split: str) -> dict:
    by_category: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_category[r["category"]].append(r["score"])
    categories = {c: round(sum(v) / len(v), 4) for c, v in sorted(by_category.items())}
    return {
        "split": split,
        "metric": "exact_match",
        "metric_definition": EXACT_MATCH_DEFINITION,
        "overall": round(sum(categories.values()) / len(categories), 4),
        "overall_definition": OVERALL_DEFINITION,
        "n": len(records),
        "categories": categories,
        "category_n": {c: len(v) for c, v in sorted(by_category.items())},
    }


def blind_baselines(train: Split, records: list[dict]) -> dict:
    """What a model that ignores the image reaches: per-category majority answer, and chance."""
    answers: dict[str, Counter] = defaultdict(Counter)
    for s in train.samples:
        answers[s.category][normalize_answer(s.answer)] += 1
    per_category = {}
    for category in sorted({r["category"] for r in records}):
        seen = answers.get(category, Counter())
        majority = seen.most_common(1)[0][0] if seen else ""
        rows = [r for r in records if r["category"] == category]
        per_category[category] = {
            "majority_answer": majority,
            "majority": round(sum(exact_match(majority, r["answer"]) for r in rows) / len(rows), 4),
            "chance": round(1 / max(1, len(seen)), 4),
        }
    mean = lambda key: round(sum(v[key] for v in per_category.values()) / len(per_category), 4)  # noqa: E731
    return {
        "majority": mean("majority"),
        "chance": mean("chance"),
        "definition": {
            "majority": MAJORITY_DEFINITION,
            "chance": CHANCE_DEFINITION,
            "overall": OVERALL_DEFINITION,
        },
        "categories": per_category,
    }


def _print(benchmark: str, scores: dict, baselines: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{benchmark} · {scores['split']} ({scores['n']} questions, {scores['metric']})")
    for column in ("category", "n", "accuracy", "blind majority", "margin"):
        table.add_column(column, justify="right" if column != "category" else "left")
    for c, acc in scores["categories"].items():
        majority = baselines["categories"][c]["majority"]
        table.add_row(
            c, str(scores["category_n"][c]), f"{acc:.3f}", f"{majority:.3f}", f"{acc - majority:+.3f}"
        )
    table.add_row(
        "[bold]overall[/]",
        str(scores["n"]),
        f"[bold]{scores['overall']:.3f}",
        f"{baselines['majority']:.3f}",
        f"{scores['overall'] - baselines['majority']:+.3f}",
    )
    console.print(table)


def evaluate_run_dir(run_path: Path, overrides: list[str]) -> dict:
    """`mmcompress eval RUN_DIR [OVERRIDES]`: re-score a finished run from its saved checkpoints."""
    from omegaconf import OmegaConf

    from mmcompress.stages import resolve_device

    run = RunDir(run_path)
    cfg = run.config()
    if overrides:
        from mmcompress.config import apply_overrides

        cfg = apply_overrides(cfg, overrides)
    OmegaConf.set_readonly(cfg, False)
    tracker = Tracker(run.path, OmegaConf.merge(cfg, {"logger": {"name": "none"}}), run.path.name)
    return evaluate(cfg, run, tracker, device=resolve_device(cfg.device))
