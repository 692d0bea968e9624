"""Scoring: each question's score by its benchmark's metric, per-category and overall scores with their
definitions, and the blind baselines a model that ignores the image reaches."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict

from mmcompress.evaluation.metrics import (
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

OVERALL_DEFINITION = "unweighted mean over categories of the per-category mean score"
MAJORITY_DEFINITION = "blind baseline: each category's most frequent train answer, scored on this split"
CHANCE_DEFINITION = "uniform guess among each category's distinct train answers"


# ---- per question (prediction, references) → (score, the answer as the metric parsed it) ------------------
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


def score_each(records: list[dict], evalset, metric: str) -> None:
    for record, question in zip(records, evalset.questions, strict=True):
        record["score"], parsed = QUESTION_SCORES[metric](record["prediction"], question.answers)
        if parsed is not None:
            record["parsed"] = parsed


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
