"""Writing the benchmark: the train split (generic scenes, several questions each, categories balanced as
they are asked) and the val/test splits (one image per question, built for a pre-drawn balanced answer),
into a temporary directory renamed into place once complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mmcompress.data.synthvqa.questions import ask, balanced, less_frequent, llava_sample, sample_objects
from mmcompress.data.synthvqa.scenes import Progress, SceneWriter
from mmcompress.data.synthvqa.spec import (
    CATEGORIES,
    COLORS,
    RELATIONS,
    SHAPES,
    SPLITS,
    SYNTHVQA_VERSION,
    WORDS,
    SynthVQASpec,
)

_TRAIN_WORD_PROBABILITY = 0.5  # train images carry a word this often so text questions are plentiful
_SCENE_TRIES = 1000  # scenes per eval image before giving up (only geometry / duplicates cause retries)
# Train: count has one answer per image; asking it twice on the (category-poor) one-object images would skew
# the count answers towards "1".
_MAX_PER_IMAGE = {"count": 1}


def generate(spec: SynthVQASpec, root: Path, *, progress: Progress | None = None) -> Path:
    """Write the benchmark under root/<'synthvqa-' + spec.cache_key()>/ and return that directory.

    If it already exists and is complete (manifest.json present with the same key), return it without work.
    Everything is written into a temporary sibling directory that is os.replace()d into place, so an
    interrupted run never leaves a half-written dataset that looks complete.
    """
    root = Path(root)
    key = spec.cache_key()
    final = root / f"synthvqa-{key}"
    if _is_complete(final, key):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".synthvqa-{key}.", suffix=".tmp", dir=root))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the finished set is an ordinary shared cache dir
        _write_dataset(spec, tmp, progress)
        if final.exists() and not _is_complete(final, key):
            shutil.rmtree(final)  # leftover of a foreign or broken writer: never trust it
        try:
            os.replace(tmp, final)
        except OSError:
            if not _is_complete(final, key):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent run finished first; its copy is identical
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _is_complete(path: Path, key: str) -> bool:
    """Complete = manifest.json (written last) exists and carries this key."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("key") == key


def _write_dataset(spec: SynthVQASpec, out: Path, progress: Progress | None) -> None:
    """Generate all splits into `out`; manifest.json last."""
    n_eval = spec.eval_questions_per_category * len(CATEGORIES)
    writer = SceneWriter(spec, out, spec.train_images + 2 * n_eval, progress)
    (out / "scenes").mkdir()
    counts: dict[str, dict[str, int]] = {}
    images: dict[str, int] = {}
    for split_index, split in enumerate(SPLITS):
        (out / "images" / split).mkdir(parents=True)
        rng = np.random.default_rng([spec.seed, split_index])
        n_images = spec.train_images if split == "train" else n_eval
        scenes: list[dict] = []
        masks = np.zeros((n_images, spec.image_size, spec.image_size), dtype=np.uint8)  # (n, H, W)
        if split == "train":
            samples = _train_split(spec, writer, rng, scenes, masks)
        else:
            samples = _eval_split(spec, writer, rng, split, scenes, masks)
        _dump_json(out / f"{split}.json", samples)
        _dump_json(out / "scenes" / f"{split}.json", scenes)
        np.savez_compressed(out / "scenes" / f"{split}_masks.npz", masks=masks)
        counts[split] = {c: sum(1 for s in samples if s["category"] == c) for c in CATEGORIES}
        images[split] = n_images
    manifest = {
        "name": "synthvqa",
        "version": SYNTHVQA_VERSION,
        "key": spec.cache_key(),
        "spec": asdict(spec),
        "counts": counts,
        "images": images,
        "categories": list(CATEGORIES),
        "colors": list(COLORS),
        "shapes": list(SHAPES),
        "words": list(WORDS),
    }
    _dump_json(out / "manifest.json", manifest, indent=2)


def _train_split(
    spec: SynthVQASpec, writer: SceneWriter, rng: np.random.Generator, scenes: list[dict], masks: np.ndarray
) -> list[dict]:
    """Generic scenes, `questions_per_image` questions each; the least-asked supported category goes next."""
    asked_per_category = dict.fromkeys(CATEGORIES, 0)
    yes_no = {"position": {"yes": 0, "no": 0}, "existence": {"yes": 0, "no": 0}}
    samples: list[dict] = []
    for index in range(spec.train_images):
        for _ in range(_SCENE_TRIES):  # retried only when the scene was already drawn
            n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
            word = WORDS[int(rng.integers(len(WORDS)))] if rng.random() < _TRAIN_WORD_PROBABILITY else None
            scene = writer.new_scene(rng, sample_objects(rng, n), word)
            if scene is not None:
                break
        else:
            raise RuntimeError(
                "synthvqa ran out of distinct train scenes; raise image_size or lower train_images"
            )
        rel = writer.emit("train", index, scene, scenes, masks)
        asked: set[str] = set()
        per_image = dict.fromkeys(CATEGORIES, 0)
        for _ in range(spec.questions_per_image):
            tie = rng.random(len(CATEGORIES))
            order = sorted(range(len(CATEGORIES)), key=lambda k: (asked_per_category[CATEGORIES[k]], tie[k]))
            picked = None
            for k in order:
                category = CATEGORIES[k]
                if per_image[category] >= _MAX_PER_IMAGE.get(category, spec.questions_per_image):
                    continue
                # Phrasing and referent are random: a few tries to find a question not yet asked here.
                for _attempt in range(4):
                    want = less_frequent(yes_no[category], rng) if category in yes_no else None
                    qa = ask(category, scene["items"], rng, spec.image_size, want=want)
                    if qa is None:
                        break  # this scene cannot support the category
                    if qa[0] not in asked:
                        picked = (category, *qa)
                        break
                if picked is not None:
                    break
            if picked is None:
                break  # nothing new to ask about this image
            category, question, answer = picked
            asked.add(question)
            asked_per_category[category] += 1
            per_image[category] += 1
            if category in yes_no:
                yes_no[category][answer] += 1
            samples.append(
                llava_sample(f"train-{index:06d}-{len(asked) - 1}", rel, category, question, answer)
            )
    return samples


def _eval_split(
    spec: SynthVQASpec,
    writer: SceneWriter,
    rng: np.random.Generator,
    split: str,
    scenes: list[dict],
    masks: np.ndarray,
) -> list[dict]:
    """One image per question, built for its category and a pre-drawn balanced answer; categories interleaved."""
    n = spec.eval_questions_per_category
    objects_range = range(spec.min_objects, spec.max_objects + 1)
    answers = {
        "color": list(COLORS),
        "shape": list(SHAPES),
        "count": [str(k) for k in objects_range],
        "position": ["yes", "no"],
        "existence": ["yes", "no"],
        "text": list(WORDS),
    }
    schedule = {c: balanced(rng, answers[c], n) for c in CATEGORIES}
    relations = balanced(rng, list(RELATIONS), n)
    samples: list[dict] = []
    for index in range(n * len(CATEGORIES)):
        category, k = CATEGORIES[index % len(CATEGORIES)], index // len(CATEGORIES)
        target = schedule[category][k]
        for _ in range(_SCENE_TRIES):
            objects, word = _eval_content(spec, rng, category, target)
            scene = writer.new_scene(rng, objects, word)
            if scene is None:
                continue
            qa = ask(category, scene["items"], rng, spec.image_size, want=target, relation=relations[k])
            if qa is not None:
                break
            writer.forget(scene)  # never emitted, so it may still be drawn later
        else:
            raise RuntimeError(f"synthvqa could not build a {category!r} scene with answer {target!r}")
        rel = writer.emit(split, index, scene, scenes, masks)
        samples.append(llava_sample(f"{split}-{index:06d}-0", rel, category, *qa))
    return samples


def _eval_content(
    spec: SynthVQASpec, rng: np.random.Generator, category: str, target: str
) -> tuple[list[tuple[str, str]], str | None]:
    """Objects and word for an eval image so that `target` is a possible answer of `category`."""
    lo, hi = spec.min_objects, spec.max_objects
    if category == "count":
        n = int(target)
    elif category == "position":
        n = int(rng.integers(max(2, lo), hi + 1))
    else:
        n = int(rng.integers(lo, hi + 1))
    if category == "color":  # the asked shape occurs once and has the target colour
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        objects = sample_objects(rng, n, first=(shape, target), avoid_shape=shape)
    elif category == "shape":  # the asked colour occurs once and has the target shape
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        objects = sample_objects(rng, n, first=(target, color), avoid_color=color)
    else:
        objects = sample_objects(rng, n)
    if category == "text":
        word: str | None = target
    else:
        word = WORDS[int(rng.integers(len(WORDS)))] if rng.random() < spec.word_probability else None
    return objects, word


def _dump_json(path: Path, obj: Any, indent: int | None = None) -> None:
    path.write_text(json.dumps(obj, indent=indent) + "\n")
