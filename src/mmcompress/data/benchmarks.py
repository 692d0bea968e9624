"""Evaluation benchmarks in their standard on-disk layouts, read from local paths into one question list.

Each loader turns its format into `Question`s (the conversation up to the answer, the reference answers,
what the metric groups by) over a table of unique images, so generation and scoring are shared by all.
Where each file lives is `benchmark.<name>.*` in the config (conf/benchmark/<name>.yaml); the layouts are
documented in the README. Every problem with a file is a one-line error naming the file and the key to fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mmcompress.data.llava import Split, place_image
from mmcompress.errors import ConfigError, UserError

OPTION_LETTERS = "ABCDEFGHIJ"  # multiple-choice options are presented and answered as these letters
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")


@dataclass(frozen=True)
class Question:
    id: str
    image: int  # index into the set's image table
    category: str
    messages: tuple[dict, ...]  # the conversation up to the answer; `<image>` in the first user turn
    answers: tuple[str, ...]  # reference answers; () when the set has none (predictions only)
    group: str = ""  # what a metric groups by beyond the category: the image for MME's acc+

    @property
    def text(self) -> str:
        return next(m["content"] for m in self.messages if m["role"] == "user")


@dataclass
class EvalSet:
    name: str
    questions: list[Question]
    images: list[Path]  # unique image files


class EvalSetBuilder:
    """Collects questions, deduplicating images and checking that every one exists."""

    def __init__(
        self, name: str, image_position: str, suffix: str, key: Callable[[str], str] | None = None
    ) -> None:
        self.key = key or (lambda field: f"benchmark.{name}.{field}")  # where the user sets a field
        self.name, self.position, self.suffix = (
            name,
            "before" if image_position == "keep" else image_position,
            suffix,
        )
        self.questions: list[Question] = []
        self.images: dict[Path, int] = {}

    def add(
        self,
        qid: Any,
        image: Path,
        question: str,
        answers: Iterable[str],
        category: str = "all",
        group: str = "",
    ) -> None:
        prompt = place_image(f"{question.strip()}{self.suffix}", self.position)
        index = self.images.setdefault(image.expanduser().resolve(), len(self.images))
        message = {"role": "user", "content": prompt}
        self.questions.append(
            Question(str(qid), index, str(category), (message,), tuple(map(str, answers)), group)
        )

    def build(self, limit: int | None, key: str) -> EvalSet:
        if not self.questions:
            raise UserError(f"{self.name} has no questions; check {self.key(key)}")
        questions = self.questions[:limit] if limit else self.questions
        used = sorted({q.image for q in questions})
        paths = list(self.images)
        missing = [paths[i] for i in used if not paths[i].is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} image(s) of {self.name} are missing, e.g. {missing[0]}; "
                f"set {self.key('image_folder')}"
            )
        remap = {old: new for new, old in enumerate(used)}
        questions = [
            Question(q.id, remap[q.image], q.category, q.messages, q.answers, q.group) for q in questions
        ]
        return EvalSet(self.name, questions, [paths[i] for i in used])


def read_json(path: str | Path, key: str, *, lines: bool = False) -> Any:
    """A JSON (or JSON-lines) file, or a one-line error naming the config key that points at it."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise UserError(f"{path} does not exist; set {key} to the file (layouts: README, Benchmarks)")
    try:
        text = path.read_text()
        if not lines:
            return json.loads(text)
        rows = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        return [_json_line(n, line) for n, line in rows]
    except json.JSONDecodeError as exc:  # JSON lines: `lineno` is the file's line (see _json_line)
        raise UserError(
            f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}; {key} must point at the original file"
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file; {key} must point at the original JSON") from None


def _json_line(number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(exc.msg, "\n" * (number - 1) + line, number - 1 + exc.pos) from None


def _field(record: Any, name: str, path: str) -> Any:
    if not isinstance(record, dict) or name not in record:
        raise UserError(f"{path}: an entry lacks '{name}' ({str(record)[:80]}); is this the right file?")
    return record[name]


def _answers(record: dict, path: str) -> list[str]:
    """VQA-style answers: plain strings or {'answer': ...} dicts."""
    answers = _field(record, "answers", path)
    return [a["answer"] if isinstance(a, dict) else a for a in answers]


# ---- loaders, one per format ---------------------------------------------------------------------------------
# Each reads `b` (the benchmark's config node) and returns the questions through a EvalSetBuilder.


def load_vqav2(b: DictConfig, build: EvalSetBuilder) -> str:
    """VQAv2: {"questions": [...]} and {"annotations": [...]} joined on question_id."""
    questions = _field(read_json(b.questions, build.key("questions")), "questions", str(b.questions))
    annotations = _field(
        read_json(b.annotations, build.key("annotations")), "annotations", str(b.annotations)
    )
    by_id = {_field(a, "question_id", str(b.annotations)): a for a in annotations}
    folder = Path(str(b.image_folder))
    for q in questions:
        qid = _field(q, "question_id", str(b.questions))
        if qid not in by_id:
            raise UserError(
                f"{b.annotations} has no annotation for question {qid}; questions and annotations must be the same split"
            )
        a = by_id[qid]
        image = folder / str(b.image_pattern).format(image_id=_field(q, "image_id", str(b.questions)))
        build.add(
            qid,
            image,
            _field(q, "question", str(b.questions)),
            _answers(a, str(b.annotations)),
            a.get("answer_type", "all"),
        )
    return "questions"


def load_textvqa(b: DictConfig, build: EvalSetBuilder) -> str:
    """TextVQA: {"data": [{question_id, question, image_id, answers, ocr_tokens}]}, images <image_id>.jpg."""
    path = str(b.questions)
    for q in _field(read_json(path, build.key("questions")), "data", path):
        question = _field(q, "question", path)
        if b.ocr_tokens:
            question += "\nReference OCR token: " + ", ".join(q.get("ocr_tokens", []))
        image = Path(str(b.image_folder)) / f"{_field(q, 'image_id', path)}.jpg"
        build.add(_field(q, "question_id", path), image, question, _answers(q, path))
    return "questions"


def load_vizwiz(b: DictConfig, build: EvalSetBuilder) -> str:
    """VizWiz-VQA: a list of {image, question, answers: [{answer, answer_confidence}], answer_type}."""
    path = str(b.annotations)
    for q in read_json(path, build.key("annotations")):
        image = _field(q, "image", path)
        category = q.get("answer_type", "all")
        build.add(
            Path(image).stem,
            Path(str(b.image_folder)) / image,
            _field(q, "question", path),
            _answers(q, path),
            category,
        )
    return "annotations"


def load_gqa(b: DictConfig, build: EvalSetBuilder) -> str:
    """GQA: {question_id: {imageId, question, answer, types: {structural, ...}}}, images <imageId>.jpg."""
    path = str(b.questions)
    records = read_json(path, build.key("questions"))
    if not isinstance(records, dict):
        raise UserError(f"{path} must map question ids to questions (GQA's *_questions.json)")
    for qid, q in records.items():
        image = Path(str(b.image_folder)) / f"{_field(q, 'imageId', path)}.jpg"
        category = (q.get("types") or {}).get("structural", "all")
        build.add(qid, image, _field(q, "question", path), [_field(q, "answer", path)], category)
    return "questions"


def load_pope(b: DictConfig, build: EvalSetBuilder) -> str:
    """POPE: one jsonl per split of {question_id, image, text, label}; the category is the split."""
    for split in b.splits:
        path = str(b.questions).format(split=split)
        for q in read_json(path, build.key("questions"), lines=True):
            label = str(_field(q, "label", path)).strip().lower()
            if label not in ("yes", "no"):
                raise UserError(
                    f"{path}: label {label!r} of question {q.get('question_id')} is not yes or no"
                )
            image = Path(str(b.image_folder)) / _field(q, "image", path)
            build.add(
                f"{split}-{_field(q, 'question_id', path)}", image, _field(q, "text", path), [label], split
            )
    return "questions"


def load_mme(b: DictConfig, build: EvalSetBuilder) -> str:
    """MME: a folder per category holding image + <stem>.txt of 'question<TAB>Yes|No' lines, either side by
    side or as images/ and questions_answers_YN/."""
    root = Path(str(b.root)).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} does not exist; set {build.key('root')} to MME_Benchmark_release_version")
    for category in sorted(p for p in root.iterdir() if p.is_dir()):
        split_layout = (category / "questions_answers_YN").is_dir()
        texts = category / "questions_answers_YN" if split_layout else category
        images = category / "images" if split_layout else category
        for qa in sorted(texts.glob("*.txt")):
            image = next(
                (images / f"{qa.stem}{s}" for s in IMAGE_SUFFIXES if (images / f"{qa.stem}{s}").is_file()),
                None,
            )
            if image is None:
                raise UserError(f"{qa}: no image {qa.stem}.* beside it; is {root} the MME release folder?")
            for n, line in enumerate(qa.read_text().splitlines()):
                if not line.strip():
                    continue
                question, sep, answer = line.rpartition("\t")
                if not sep or answer.strip().lower() not in ("yes", "no"):
                    raise UserError(f"{qa}, line {n + 1}: expected 'question<TAB>Yes|No'")
                build.add(
                    f"{category.name}/{qa.stem}/{n}",
                    image,
                    question,
                    [answer.strip()],
                    category.name,
                    f"{category.name}/{qa.stem}",
                )
    return "root"


def load_scienceqa(b: DictConfig, build: EvalSetBuilder) -> str:
    """ScienceQA-IMG: problems.json questions of pid_splits.json's split that have an image, as lettered options."""
    problems = read_json(b.problems, build.key("problems"))
    splits = read_json(b.pid_splits, build.key("pid_splits"))
    if b.split not in splits:
        raise UserError(f"{b.pid_splits} has no split {b.split!r}; splits: {', '.join(splits)}")
    for pid in splits[b.split]:
        p = problems.get(pid) if isinstance(problems, dict) else None
        if p is None:
            raise UserError(
                f"{b.problems} has no problem {pid}; problems.json and pid_splits.json must match"
            )
        if not p.get("image"):
            continue  # IMG: questions with an image only
        options = "\n".join(
            f"{OPTION_LETTERS[i]}. {c}" for i, c in enumerate(_field(p, "choices", str(b.problems)))
        )
        context = f"Context: {p['hint']}\n" if p.get("hint") else ""
        answer = OPTION_LETTERS[_field(p, "answer", str(b.problems))]
        image = Path(str(b.image_folder)) / b.split / pid / p["image"]
        build.add(pid, image, f"{context}{p['question']}\n{options}", [answer], p.get("subject", "all"))
    return "problems"


def load_docvqa(b: DictConfig, build: EvalSetBuilder) -> str:
    """DocVQA: {"data": [{questionId, question, image, answers, question_types}]}, image paths relative."""
    path = str(b.questions)
    for q in _field(read_json(path, build.key("questions")), "data", path):
        image = Path(str(b.image_folder)) / _field(q, "image", path)
        category = (q.get("question_types") or ["all"])[0]
        build.add(
            _field(q, "questionId", path),
            image,
            _field(q, "question", path),
            _field(q, "answers", path),
            category,
        )
    return "questions"


def load_llava_questions(b: DictConfig, build: EvalSetBuilder) -> str:
    """LLaVA's evaluation question jsonl: {question_id, image, text, optional category}; references, when
    present, from 'answers', 'answer' or 'label'."""
    if not b.questions:
        raise UserError(f"set {build.key('questions')} to a LLaVA question .jsonl file")
    path = str(b.questions)
    folder = Path(str(b.image_folder or Path(path).expanduser().parent))
    for n, q in enumerate(read_json(path, build.key("questions"), lines=True)):
        references = q.get("answers", q.get("answer", q.get("label")))
        references = [] if references is None else [references] if isinstance(references, str) else references
        references = references * 10 if len(references) == 1 else references  # VQA accuracy: as ten humans
        text = _field(q, "text", path).replace("<image>", "").strip()
        build.add(
            q.get("question_id", n),
            folder / _field(q, "image", path),
            text,
            references,
            q.get("category", "all"),
        )
    return "questions"


@dataclass(frozen=True)
class Benchmark:
    load: Callable[[DictConfig, EvalSetBuilder], str]  # fills the builder; returns the key to name when empty
    metric: str  # how answers are scored (evaluation/scoring.py QUESTION_SCORES)
    lmms_task: str  # the task name lmms-eval gives the same data


BENCHMARKS: dict[str, Benchmark] = {
    "vqav2": Benchmark(load_vqav2, "vqa", "vqav2_val"),
    "textvqa": Benchmark(load_textvqa, "vqa", "textvqa_val"),
    "vizwiz": Benchmark(load_vizwiz, "vqa", "vizwiz_vqa_val"),
    "gqa": Benchmark(load_gqa, "exact", "gqa"),
    "pope": Benchmark(load_pope, "pope", "pope"),
    "mme": Benchmark(load_mme, "mme", "mme"),
    "scienceqa": Benchmark(load_scienceqa, "option", "scienceqa_img"),
    "docvqa": Benchmark(load_docvqa, "anls", "docvqa_val"),
    "llava_questions": Benchmark(load_llava_questions, "vqa", "llava_questions"),
}
TRAINING_DATA = ("synthvqa", "llava")  # benchmarks that are the held-out split of the training data
CHOOSABLE_METRICS = ("vqa", "exact", "anls", "option", "pope")  # for question files (MME needs image pairs)


def load_benchmark(cfg: DictConfig, name: str, image_position: str) -> EvalSet:
    """The questions of benchmark `name` with their prompts as the model is prompted at evaluation."""
    b = cfg.benchmark[name]
    build = EvalSetBuilder(name, image_position, b.get("prompt_suffix") or "")
    key = BENCHMARKS[name].load(b, build)
    return build.build(b.get("max_samples"), key)


def from_split(split: Split, name: str, limit: int | None = None) -> EvalSet:
    """A training-data split as an evaluation set; each single reference answer is stored as ten human
    answers would be, so VQA accuracy on it is normalised exact match."""
    samples = split.samples[:limit] if limit else split.samples
    questions = []
    for s in samples:
        first_answer = next(k for k, m in enumerate(s.messages) if m["role"] == "assistant")
        questions.append(Question(s.id, s.image, s.category, s.messages[:first_answer], (s.answer,) * 10))
    return EvalSet(name, questions, split.images)


def check_benchmarks(cfg: DictConfig) -> None:
    """Every name in eval.benchmarks is known and configured (the training data's own name counts)."""
    known = sorted({*BENCHMARKS, cfg.data.name})
    for name in cfg.eval.benchmarks:
        if name not in known or (name in TRAINING_DATA and name != cfg.data.name):
            raise ConfigError(
                f"eval.benchmarks has unknown benchmark {name!r}; choose from {', '.join(known)} "
                f"({cfg.data.name} is the training data's {cfg.eval.split} split)"
            )
        if name in BENCHMARKS and name not in cfg.get("benchmark", {}):
            raise UserError(f"benchmark.{name} is missing from this config; rerun with the packaged conf/")
        metric = cfg.benchmark[name].get("metric") if name in BENCHMARKS else None
        if metric is not None and metric not in CHOOSABLE_METRICS:
            raise ConfigError(
                f"benchmark.{name}.metric={metric!r} is not one of {', '.join(CHOOSABLE_METRICS)}"
            )
