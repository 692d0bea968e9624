"""Answering: batched greedy answers to an evaluation set, from cached features or from pixels."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from mmcompress.console import progress
from mmcompress.data.benchmarks import EvalSet
from mmcompress.data.llava import encode_prompts, pad
from mmcompress.data.loading import pixel_batches, worker_count
from mmcompress.evaluation.metrics import normalize_vqa_answer, pope_scores
from mmcompress.evaluation.scoring import score_each, score_records
from mmcompress.model.features import split_features
from mmcompress.model.multimodal import MultimodalLM


@torch.no_grad()
def answer_questions(
    model: MultimodalLM,
    evalset: EvalSet,
    features: dict | None,
    batch_size: int,
    max_new_tokens: int,
    workers: int = 0,
) -> tuple[list[dict], torch.Tensor]:
    """Greedy answers, batch by batch, as records; image features from `features` (one row per image) when
    given, else each batch's images are read (by `workers` processes, ahead) and encoded. Returns the
    records and (n,) visual tokens fed."""
    device = next(model.parameters()).device
    tokenizer = model.tokenizer
    questions = evalset.questions
    prompts = encode_prompts(questions, tokenizer)
    records, visual_counts = [], []
    starts = range(0, len(questions), batch_size)
    if features is None:
        images = [[q.image for q in questions[lo : lo + batch_size]] for lo in starts]
        preprocess = {name: expert.preprocess for name, expert in model.experts.items()}
        pixels = pixel_batches(evalset.images, images, preprocess, workers, device)
    with progress() as bar:
        task = bar.add_task("eval", total=len(questions), info=evalset.name)
        for lo in starts:
            chunk = questions[lo : lo + batch_size]
            if features is not None:
                image_index = torch.tensor([q.image for q in chunk], device=device)
                batch_features = {name: f[image_index] for name, f in features.items()}  # (B, N, C) each
            else:
                batch_features = model.encode_images(next(pixels))
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


def score_split(
    model: MultimodalLM, evalset: EvalSet, cfg: DictConfig
) -> tuple[list[dict], dict, torch.Tensor]:
    """Greedy answers to a training-data split (features from the store), VQA-scored per category; its
    yes/no questions are also scored as POPE is."""
    device = next(model.parameters()).device
    features = split_features(
        dict(model.experts), evalset.images, cfg, device, f"{evalset.name} images", model.signal_spec
    )
    records, counts = answer_questions(
        model,
        evalset,
        features,
        cfg.eval.batch_size,
        cfg.eval.max_new_tokens,
        worker_count(cfg.train.num_workers),
    )
    score_each(records, evalset, "vqa")
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
