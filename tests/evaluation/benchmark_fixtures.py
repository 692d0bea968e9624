"""Small benchmark files in each standard on-disk layout, written from (image, question, answer) items.

`write_benchmarks(root, items)` lays every benchmark out under `root` as the packaged configs expect
with `paths.benchmarks=root`, so the same items can be read back through each loader and, in the CLI
tests, answered by a trained run (items drawn from synthvqa's test split make the answers meaningful).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Item:
    image: Path
    question: str
    answer: str
    category: str = "all"

    @property
    def yes_no(self) -> bool:
        return self.answer.lower() in ("yes", "no")


def _put(image: Path, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image, target)
    return target.name


def _dump(path: Path, content, *, lines: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(c) + "\n" for c in content) if lines else json.dumps(content))


POPE_SPLITS = ("random", "popular", "adversarial")


def write_benchmarks(root: Path, items: list[Item]) -> dict[str, int]:
    """Write every format under `root`; returns how many questions each benchmark should load."""
    yes_no = [it for it in items if it.yes_no]
    counts = {}

    # VQAv2: questions and annotations joined on question_id; ten human answers
    questions, annotations = [], []
    for n, it in enumerate(items):
        _put(it.image, root / "vqav2" / "val2014" / f"COCO_val2014_{n:012d}.jpg")
        questions.append({"image_id": n, "question": it.question, "question_id": 1000 + n})
        answers = [{"answer": it.answer, "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]
        annotations.append(
            {"question_id": 1000 + n, "image_id": n, "answers": answers, "answer_type": it.category}
        )
    _dump(root / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": questions})
    _dump(root / "vqav2" / "v2_mscoco_val2014_annotations.json", {"annotations": annotations})
    counts["vqav2"] = len(items)

    # TextVQA: one file with answers and OCR tokens
    data = []
    for n, it in enumerate(items):
        _put(it.image, root / "textvqa" / "train_images" / f"img{n:04d}.jpg")
        data.append(
            {
                "question_id": n,
                "question": it.question,
                "image_id": f"img{n:04d}",
                "answers": [it.answer] * 10,
                "ocr_tokens": ["sign", "42"],
            }
        )
    _dump(root / "textvqa" / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data})
    counts["textvqa"] = len(items)

    # VizWiz: a list with image file names
    records = []
    for n, it in enumerate(items):
        name = _put(it.image, root / "vizwiz" / "val" / f"VizWiz_val_{n:08d}.jpg")
        answers = [{"answer": it.answer, "answer_confidence": "yes"}] * 10
        records.append(
            {
                "image": name,
                "question": it.question,
                "answers": answers,
                "answer_type": "other",
                "answerable": 1,
            }
        )
    _dump(root / "vizwiz" / "val.json", records)
    counts["vizwiz"] = len(items)

    # GQA: a dict keyed by question id
    gqa = {}
    for n, it in enumerate(items):
        _put(it.image, root / "gqa" / "images" / f"n{n}.jpg")
        gqa[f"q{n}"] = {
            "imageId": f"n{n}",
            "question": it.question,
            "answer": it.answer,
            "types": {"structural": it.category},
        }
    _dump(root / "gqa" / "testdev_balanced_questions.json", gqa)
    counts["gqa"] = len(items)

    # POPE: yes/no items dealt round-robin into the three split files
    for s, split in enumerate(POPE_SPLITS):
        lines = []
        for n, it in enumerate(yes_no[s :: len(POPE_SPLITS)]):
            name = _put(it.image, root / "pope" / "val2014" / f"COCO_val2014_{s}{n:011d}.jpg")
            lines.append(
                {"question_id": n + 1, "image": name, "text": it.question, "label": it.answer.lower()}
            )
        _dump(root / "pope" / f"coco_pope_{split}.json", lines, lines=True)
    counts["pope"] = len(yes_no)

    # MME: yes/no items in pairs per image; 'existence' side by side, 'artwork' in images/ + questions_answers_YN/
    mme = root / "mme" / "MME_Benchmark_release_version"
    for n, it in enumerate(yes_no):
        category, split_layout = ("existence", False) if n % 2 == 0 else ("artwork", True)
        folder = mme / category
        _put(it.image, (folder / "images" if split_layout else folder) / f"{n:04d}.png")
        flipped = "No" if it.answer.lower() == "yes" else "Yes"
        text = f"{it.question}\t{it.answer.capitalize()}\n{it.question} Answer the opposite.\t{flipped}\n"
        qa = (folder / "questions_answers_YN" if split_layout else folder) / f"{n:04d}.txt"
        qa.parent.mkdir(parents=True, exist_ok=True)
        qa.write_text(text)
    counts["mme"] = 2 * len(yes_no)

    # ScienceQA: lettered choices (the answer first, then another category answer), plus a text-only problem
    distractors = sorted({it.answer for it in items})
    problems, test = {}, []
    for n, it in enumerate(items):
        other = next((d for d in distractors if d != it.answer), "none")
        choices = [other, it.answer] if n % 2 else [it.answer, other]
        pid = str(100 + n)
        _put(it.image, root / "scienceqa" / "images" / "test" / pid / "image.png")
        problems[pid] = {
            "question": it.question,
            "choices": choices,
            "answer": choices.index(it.answer),
            "hint": "A picture." if n % 3 == 0 else "",
            "image": "image.png",
            "subject": "natural science",
            "split": "test",
        }
        test.append(pid)
    problems["9999"] = {
        "question": "Text only?",
        "choices": ["a", "b"],
        "answer": 0,
        "hint": "",
        "image": None,
        "subject": "language science",
        "split": "test",
    }
    _dump(root / "scienceqa" / "problems.json", problems)
    _dump(root / "scienceqa" / "pid_splits.json", {"train": [], "val": [], "test": [*test, "9999"]})
    counts["scienceqa"] = len(items)

    # DocVQA: relative image paths under the image folder
    data = []
    for n, it in enumerate(items):
        _put(it.image, root / "docvqa" / "documents" / f"doc{n}.png")
        data.append(
            {
                "questionId": n,
                "question": it.question,
                "image": f"documents/doc{n}.png",
                "answers": [it.answer, it.answer.upper()],
                "question_types": ["figure/diagram"],
            }
        )
    _dump(root / "docvqa" / "val_v1.0_withQT.json", {"dataset_name": "docvqa", "data": data})
    counts["docvqa"] = len(items)

    # LLaVA question jsonl with answers, images beside it
    lines = []
    for n, it in enumerate(items):
        name = _put(it.image, root / "llava" / "images" / f"{n}.png")
        lines.append(
            {
                "question_id": n,
                "image": f"images/{name}",
                "text": it.question,
                "category": it.category,
                "answer": it.answer,
            }
        )
    _dump(root / "llava" / "questions.jsonl", lines, lines=True)
    counts["llava_questions"] = len(items)
    return counts


def synthvqa_items(split) -> list[Item]:
    """The questions of a loaded synthvqa split as items (the question text without `<image>`)."""
    items = []
    for s in split.samples:
        question = next(m["content"] for m in s.messages if m["role"] == "user")
        items.append(
            Item(split.images[s.image], question.replace("<image>", "").strip(), s.answer, s.category)
        )
    return items
