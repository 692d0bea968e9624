"""The community's answer metrics, as their reference evaluators compute them, importable as a library.

Each per-question function takes the model's raw text and the reference answer(s); each aggregate names
its definition, because the same predictions score several points apart under neighbouring definitions
(MME perception vs perception + cognition, POPE per split vs pooled, TextVQA with or without OCR tokens).
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

from mmcompress.data.benchmarks import OPTION_LETTERS

# ---- VQA answer normalisation (the EvalAI / lmms-eval rules used for VQAv2, TextVQA, VizWiz) -------------

_SPACED_PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
}
_NUMBER_WORDS["none"] = "0"
_ARTICLES = {"a", "an", "the"}
# Contractions written with their apostrophes; every spelling that drops some of them maps back. Those that
# would be ordinary words without an apostrophe (he'll, we'll, it's, she'd, I'd) are not listed, as in the
# reference table.
_CONTRACTED = [
    "ain't",
    "aren't",
    "can't",
    "could've",
    "couldn't",
    "couldn't've",
    "didn't",
    "doesn't",
    "don't",
    "hadn't",
    "hadn't've",
    "hasn't",
    "haven't",
    "he'd",
    "he'd've",
    "he's",
    "how'd",
    "how'll",
    "how's",
    "isn't",
    "it'd",
    "it'd've",
    "it'll",
    "let's",
    "ma'am",
    "mightn't",
    "mightn't've",
    "might've",
    "mustn't",
    "must've",
    "needn't",
    "not've",
    "o'clock",
    "oughtn't",
    "'ow's'at",
    "shan't",
    "she'd've",
    "she's",
    "should've",
    "shouldn't",
    "shouldn't've",
    "somebody'd",
    "somebody'd've",
    "somebody'll",
    "somebody's",
    "someone'd",
    "someone'd've",
    "someone'll",
    "someone's",
    "something'd",
    "something'd've",
    "something'll",
    "something's",
    "that's",
    "there'd",
    "there'd've",
    "there're",
    "there's",
    "they'd",
    "they'd've",
    "they'll",
    "they're",
    "they've",
    "'twas",
    "wasn't",
    "we'd've",
    "we're",
    "we've",
    "weren't",
    "what'll",
    "what're",
    "what's",
    "what've",
    "when's",
    "where'd",
    "where's",
    "where've",
    "who'd",
    "who'd've",
    "who'll",
    "who's",
    "who've",
    "why'll",
    "why're",
    "why's",
    "won't",
    "would've",
    "wouldn't",
    "wouldn't've",
    "y'all",
    "y'all'll",
    "y'all'd've",
    "you'd",
    "you'd've",
    "you'll",
    "you're",
    "you've",
]
_ORDINARY_WORDS = {"were"}  # we're without its apostrophe


def _spellings(word: str):
    """Every spelling of `word` that drops at least one of its apostrophes."""
    first, *rest = word.split("'")
    for marks in itertools.product(("'", ""), repeat=len(rest)):
        if "".join(marks) != "'" * len(rest):
            yield first + "".join(m + part for m, part in zip(marks, rest, strict=True))


_CONTRACTIONS = {s: word for word in _CONTRACTED for s in _spellings(word) if s not in _ORDINARY_WORDS}

VQA_NORMALISATION = (
    'lowercased; punctuation ;/[]"{}()=+\\_-><@`,?! deleted when next to a space or when the text has a '
    "comma between digits, else replaced by a space; periods dropped unless before a digit; number words "
    "zero-ten and none to digits; articles a/an/the dropped; contractions restored (dont -> don't)"
)


def normalize_vqa_answer(text: str) -> str:
    """The standard VQA normalisation of an answer: '1,000 Dogs!' → '1000 dogs', 'Two.' → '2', 'dont' → "don't"."""
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    cleaned = text
    for mark in _SPACED_PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        cleaned = cleaned.replace(mark, "" if touches_space or delete_all else " ")
    cleaned = _PERIOD_NOT_DECIMAL.sub("", cleaned)
    words = [_NUMBER_WORDS.get(w, w) for w in cleaned.split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy: the mean over leave-one-annotator-out subsets of min(1, matching answers / 3).

    With the ten human answers of VQAv2/TextVQA/VizWiz this is the official score; a single reference
    stored ten times (as the embedded benchmark does) reduces it to normalised exact match."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    predicted = normalize_vqa_answer(prediction)
    matches = [normalize_vqa_answer(a) == predicted for a in answers]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3) for m in matches) / len(matches)


VQA_DEFINITION = (
    "VQA accuracy: mean over the leave-one-out subsets of the human answers of min(1, matches/3), "
    "prediction and answers normalised (" + VQA_NORMALISATION + ")"
)

# ---- exact match (GQA) ---------------------------------------------------------------------------------------


def exact_match(prediction: str, answer: str) -> float:
    """GQA's exact match: both lowercased and stripped, the prediction's final period removed."""
    return float(prediction.strip().lower().removesuffix(".").strip() == answer.strip().lower())


EXACT_MATCH_DEFINITION = "exact match after lowercasing and stripping the prediction's final period (GQA)"

# ---- yes/no answers: POPE and MME ----------------------------------------------------------------------------


def pope_answer(prediction: str) -> str:
    """POPE's parsing: the first sentence, commas removed, is 'no' if it has the word no/No/not, else 'yes'."""
    words = prediction.split(".")[0].replace(",", "").split()
    return "no" if {"no", "No", "not"} & set(words) else "yes"


def pope_metrics(predicted: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall and F1 with 'yes' as the positive class, and the yes-ratio of the
    predictions (not of the labels), from parsed 'yes'/'no' predictions and labels."""
    pairs = list(zip(predicted, labels, strict=True))
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    fn = sum(p == "no" and t == "yes" for p, t in pairs)
    correct = sum(p == t for p, t in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": correct / len(pairs),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(p == "yes" for p in predicted) / len(pairs),
        "n": len(pairs),
    }


POPE_DEFINITIONS = {
    "parsing": "first sentence of the answer, commas removed; 'no' if it contains the word no, No or not, "
    "else 'yes' (LLaVA's eval_pope)",
    "accuracy": "fraction of questions answered correctly",
    "precision": "TP / (TP + FP), positive class 'yes'",
    "recall": "TP / (TP + FN), positive class 'yes'",
    "f1": "2 PR / (P + R)",
    "yes_ratio": "fraction of the model's answers that are 'yes'",
}


def pope_scores(predictions: Sequence[str], labels: Sequence[str], splits: Sequence[str]) -> dict:
    """POPE per split, their unweighted mean (LLaVA's reported F1 is this mean), and pooled over all."""
    parsed = [pope_answer(p) for p in predictions]
    by_split: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for answer, label, split in zip(parsed, labels, splits, strict=True):
        by_split[split][0].append(answer)
        by_split[split][1].append(label)
    per_split = {s: pope_metrics(*by_split[s]) for s in sorted(by_split)}
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    mean = {k: sum(m[k] for m in per_split.values()) / len(per_split) for k in keys}
    return {
        "splits": per_split,
        "mean_over_splits": mean,
        "pooled": pope_metrics(parsed, labels),
        "definitions": {
            **POPE_DEFINITIONS,
            "mean_over_splits": "unweighted mean of each metric over the splits",
            "pooled": "each metric over all questions of all splits together (lmms-eval's convention)",
        },
    }


def mme_answer(prediction: str) -> str:
    """MME's parsing: 'yes'/'no' (or 'y'/'n'), else yes or no found in the first four characters, else 'other'."""
    text = prediction.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


MME_PERCEPTION = tuple(
    ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR"]
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_scores(
    predictions: Sequence[str], labels: Sequence[str], categories: Sequence[str], images: Sequence[str]
) -> dict:
    """Per category acc and acc+ (both questions of an image right), score = 100·(acc + acc+), max 200;
    perception = sum over its 10 categories (max 2000), cognition over its 4 (max 800)."""
    right: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for prediction, label, category, image in zip(predictions, labels, categories, images, strict=True):
        right[category][image].append(mme_answer(prediction) == label.strip().lower())
    per_category = {}
    for category, per_image in sorted(right.items()):
        answers = [r for rs in per_image.values() for r in rs]
        acc = sum(answers) / len(answers)
        acc_plus = sum(all(rs) for rs in per_image.values()) / len(per_image)
        per_category[category] = {
            "acc": acc,
            "acc_plus": acc_plus,
            "score": 100 * (acc + acc_plus),
            "questions": len(answers),
            "images": len(per_image),
        }
    total = lambda names: sum(per_category[c]["score"] for c in names if c in per_category)  # noqa: E731
    unknown = sorted(set(per_category) - set(MME_PERCEPTION) - set(MME_COGNITION))
    return {
        "perception": total(MME_PERCEPTION),
        "cognition": total(MME_COGNITION),
        "perception_plus_cognition": total(MME_PERCEPTION) + total(MME_COGNITION),
        "categories": per_category,
        "categories_missing": [c for c in (*MME_PERCEPTION, *MME_COGNITION) if c not in per_category],
        "categories_unknown": unknown,
        "definitions": {
            "parsing": "lowercased, periods removed; yes/no (or y/n), else yes or no within the first 4 "
            "characters, else 'other' (wrong)",
            "acc": "fraction of a category's questions answered correctly",
            "acc_plus": "fraction of a category's images with both questions answered correctly",
            "score": "100 x (acc + acc_plus), max 200 per category",
            "perception": f"sum of the scores of the {len(MME_PERCEPTION)} perception categories "
            f"({', '.join(MME_PERCEPTION)}), max 2000: the number LLaVA and PruMerge report as MME",
            "cognition": f"sum over the {len(MME_COGNITION)} cognition categories, max 800",
            "perception_plus_cognition": "perception + cognition, max 2800: the MME of VisionZip and later "
            "pruning papers",
        },
    }


# ---- multiple choice: ScienceQA ------------------------------------------------------------------------------

_ANSWER_IS = re.compile(r"The answer is \(?([A-Z])\)?")


def option_letter(prediction: str, n_options: int = len(OPTION_LETTERS)) -> str | None:
    """The chosen letter as ScienceQA's evaluators parse it: the letter alone ('B', 'b', '(B)'), an answer
    starting 'B.', or 'The answer is B.'; None when nothing parses or the letter is not an option."""
    text = prediction.strip()
    letters = OPTION_LETTERS[:n_options]
    bare = text.strip("()").rstrip(".")
    if len(bare) == 1 and bare.upper() in letters:
        return bare.upper()
    if len(text) >= 2 and text[0] in letters and text[1] in ".)":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 and found[0] in letters else None


OPTION_DEFINITION = (
    "option-letter accuracy: the letter alone, an answer starting 'X.' or 'The answer is X' is parsed; "
    "anything else counts as wrong"
)

# ---- ANLS (DocVQA) -------------------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) by the two-row dynamic programme."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity for one question: max over answers of 1 − NL, where NL is
    the edit distance over the longer length of the lowercased, space-collapsed strings; 0 when NL ≥ threshold."""
    clean = lambda s: " ".join(s.strip().lower().split())  # noqa: E731
    predicted = clean(prediction)
    best = 0.0
    for answer in map(clean, answers):
        longest = max(len(answer), len(predicted))
        distance = levenshtein(answer, predicted) / longest if longest else 0.0
        best = max(best, 1 - distance if distance < threshold else 0.0)
    return best


ANLS_DEFINITION = (
    "ANLS: per question the max over reference answers of 1 - NL (NL = edit distance / longer length, both "
    "lowercased with spaces collapsed), 0 when NL >= 0.5; mean over questions"
)


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
