"""synthvqa: a deterministic, procedurally generated VQA benchmark written once in LLaVA format.

Why it exists: the tool needs a default benchmark that needs no download, generates in seconds, has answers
that follow exactly from the scene (so scores mean something), and ships per-pixel scene masks from which
per-patch labels for pretraining a tiny vision encoder can be derived.

Layout of a generated directory (all paths relative to it)::

    manifest.json                     written last; its presence with the right key marks the set complete
    train.json, val.json, test.json   LLaVA samples, one question each
    images/<split>/<index:06d>.png    RGB, image_size x image_size
    scenes/<split>.json               background, items (objects + optional word) with bboxes, caption
    scenes/<split>_masks.npz          masks uint8 (n, H, W): 0 background, i + 1 = items[i]

Bounding boxes are ``[x0, y0, x1, y1]`` with x1/y1 EXCLUSIVE (numpy-slice convention), so the pixels of an
item are ``image[y0:y1, x0:x1]``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmcompress.errors import ConfigError
from mmcompress.versioning import source_digest

__all__ = [
    "CATEGORIES",
    "COLORS",
    "RELATIONS",
    "SHAPES",
    "SPLITS",
    "SYNTHVQA_VERSION",
    "WORDS",
    "SynthVQASpec",
    "caption",
    "generate",
]

SYNTHVQA_VERSION = source_digest("data/synthvqa.py")  # the generator's code version keys its cache

CATEGORIES = ("color", "shape", "count", "position", "existence", "text")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 50, 180),
    "orange": (250, 130, 10),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
WORDS: tuple[str, ...] = (
    "cat", "dog", "sun", "car", "tree", "fish", "book", "cup",
    "bird", "moon", "ship", "key", "hat", "box", "pen", "bus",
)  # fmt: skip
SPLITS = ("train", "val", "test")
RELATIONS = ("left of", "right of", "above", "below")

# Light grey / beige backgrounds: all far from every object colour and from the white word box.
_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (236, 236, 236),
    (224, 224, 220),
    (244, 238, 222),
    (234, 226, 208),
)
_WORD_BOX = (255, 255, 255)
_WORD_INK = (0, 0, 0)
_WORD_PAD = 2  # px around the text bbox
_TRAIN_WORD_PROBABILITY = 0.5  # train images carry a word this often so text questions are plentiful
_PLACE_TRIES = 64  # candidate positions per item (drawn at once)
_LAYOUT_TRIES = 200  # full re-layouts before giving up
_SCENE_TRIES = 1000  # scenes per eval image before giving up (only geometry / duplicates cause retries)
_PROGRESS_EVERY = 100
# Train: count has one answer per image; asking it twice on the (category-poor) one-object images would skew
# the count answers towards "1".
_MAX_PER_IMAGE = {"count": 1}

# ~2 phrasings per category keep the word-level question vocabulary small.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": ("what color is the {shape}?", "what is the color of the {shape}?"),
    "shape": ("what shape is the {color} object?", "what is the shape of the {color} object?"),
    "count": ("how many objects are there?", "how many shapes are in the image?"),
    "position": ("is the {c1} {s1} {rel} the {c2} {s2}?",),
    "existence": ("is there a {color} {shape}?", "is there a {color} {shape} in the image?"),
    "text": ("what word is written in the image?", "what does the text say?"),
}

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SynthVQASpec:
    """Everything that determines the generated benchmark; hashed into the cache key."""

    seed: int = 0
    image_size: int = 64
    train_images: int = 4000
    questions_per_image: int = 6
    eval_questions_per_category: int = 200
    min_objects: int = 1
    max_objects: int = 3
    object_size: tuple[int, int] = (14, 22)
    text_size: int = 10
    word_probability: float = 0.5

    def __post_init__(self) -> None:
        # Configs may hand over a list (YAML has no tuples); keep the field hashable and the key stable.
        object.__setattr__(self, "object_size", tuple(int(v) for v in self.object_size))
        if self.image_size < 16:
            raise ConfigError(f"synthvqa image_size must be >= 16, got {self.image_size}")
        if self.train_images < 0 or self.eval_questions_per_category < 0 or self.questions_per_image < 1:
            raise ConfigError(
                "synthvqa train_images and eval_questions_per_category must be >= 0, questions_per_image >= 1"
            )
        if not 1 <= self.min_objects <= self.max_objects <= 9:
            raise ConfigError(
                f"synthvqa needs 1 <= min_objects <= max_objects <= 9, got {self.min_objects}..{self.max_objects}"
            )
        if self.max_objects < 2:
            raise ConfigError("synthvqa max_objects must be >= 2 (position questions need two objects)")
        if len(self.object_size) != 2 or not 1 <= self.object_size[0] <= self.object_size[1]:
            raise ConfigError(
                f"synthvqa object_size must be (min, max) with 1 <= min <= max, got {self.object_size}"
            )
        if self.text_size < 4:
            raise ConfigError(f"synthvqa text_size must be >= 4, got {self.text_size}")
        if not 0.0 <= self.word_probability <= 1.0:
            raise ConfigError(f"synthvqa word_probability must be in [0, 1], got {self.word_probability}")

    def cache_key(self) -> str:
        """Short stable hash of every field and the generator version: a changed spec never reuses old data."""
        payload = json.dumps({"version": SYNTHVQA_VERSION, "spec": asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------------------
# Public entry points


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


def caption(scene: dict[str, Any]) -> str:
    """Deterministic text description of a scene, for contrastive (image, text) pretraining.

    Objects are chained left to right, each related to the next by its dominant axis, e.g.
    "a red circle left of a blue square above a green cross . the word cat".
    """
    objects = [it for it in scene["items"] if it["kind"] == "object"]
    words = [it["word"] for it in scene["items"] if it["kind"] == "word"]
    objects.sort(key=lambda it: (_centre(it["bbox"]), it["shape"], it["color"]))
    parts: list[str] = []
    for k, it in enumerate(objects):
        if k:
            (px, py), (cx, cy) = _centre(objects[k - 1]["bbox"]), _centre(it["bbox"])
            dx, dy = cx - px, cy - py  # dx >= 0 by the sort
            parts.append("left of" if dx >= abs(dy) else ("above" if dy > 0 else "below"))
        parts.append(f"a {it['color']} {it['shape']}")
    if words:
        if parts:
            parts.append(".")
        parts.append(f"the word {words[0]}")
    return " ".join(parts) if parts else "an empty image"


# --------------------------------------------------------------------------------------------------------------
# Dataset writing


def _is_complete(path: Path, key: str) -> bool:
    """Complete = manifest.json (written last) exists and carries this key."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("key") == key


class _Writer:
    """Renders scenes, writes PNGs and collects per-split scenes, masks and samples."""

    def __init__(self, spec: SynthVQASpec, out: Path, total: int, progress: Progress | None) -> None:
        self.spec = spec
        self.out = out
        self.total = total
        self.progress = progress
        self.done = 0
        self.seen: set[str] = set()  # canonical scene descriptions: no image repeats, within or across splits
        self.font = _load_font(spec.text_size)
        self.word_sizes = {w: _word_box_size(self.font, w) for w in WORDS}
        s = spec.image_size
        self.obj_lo = max(3, round(spec.object_size[0] * s / 64))
        self.obj_hi = max(self.obj_lo, round(spec.object_size[1] * s / 64))
        self.gap = max(1, round(2 * s / 64))  # margin between items and to the image border

    # scene construction ---------------------------------------------------------------------------------------

    def new_scene(
        self, rng: np.random.Generator, objects: list[tuple[str, str]], word: str | None
    ) -> dict | None:
        """Lay out and describe a scene; None if the same scene was already produced (caller redraws)."""
        background = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
        boxes, word_box = self._layout(rng, len(objects), self.word_sizes[word] if word else None)
        items: list[dict[str, Any]] = [
            {"kind": "object", "shape": shape, "color": color, "bbox": list(box)}
            for (shape, color), box in zip(objects, boxes, strict=True)
        ]
        if word is not None and word_box is not None:
            items.append({"kind": "word", "word": word, "bbox": list(word_box)})
        scene = {"image": "", "background": list(background), "items": items}
        if _signature(scene) in self.seen:
            return None
        self.seen.add(_signature(scene))
        return scene

    def forget(self, scene: dict[str, Any]) -> None:
        """Undo new_scene's bookkeeping for a scene that will not be emitted."""
        self.seen.discard(_signature(scene))

    def _layout(
        self, rng: np.random.Generator, n_objects: int, word_size: tuple[int, int] | None
    ) -> tuple[list[Box], Box | None]:
        """Non-overlapping boxes (with a gap) by vectorised rejection sampling; the word is placed first (largest)."""
        s, gap = self.spec.image_size, self.gap
        if word_size is not None and max(word_size) > s - 2 * gap:
            raise ConfigError(f"synthvqa text_size {self.spec.text_size} is too large for image_size {s}")
        for _ in range(_LAYOUT_TRIES):
            sizes = [word_size] if word_size is not None else []
            sides = rng.integers(self.obj_lo, self.obj_hi + 1, size=n_objects)
            sizes += [(int(v), int(v)) for v in sides]
            placed: list[Box] = []
            for w, h in sizes:
                xs = rng.integers(gap, s - w - gap + 1, size=_PLACE_TRIES)  # (T,)
                ys = rng.integers(gap, s - h - gap + 1, size=_PLACE_TRIES)  # (T,)
                ok = np.ones(_PLACE_TRIES, dtype=bool)
                for bx0, by0, bx1, by1 in placed:
                    ok &= (
                        (xs + w + gap <= bx0) | (bx1 + gap <= xs) | (ys + h + gap <= by0) | (by1 + gap <= ys)
                    )
                if not ok.any():
                    break
                k = int(np.argmax(ok))
                x0, y0 = int(xs[k]), int(ys[k])
                placed.append((x0, y0, x0 + w, y0 + h))
            else:
                if word_size is not None:
                    return placed[1:], placed[0]
                return placed, None
        raise ConfigError(
            f"synthvqa could not place {n_objects} objects (size {self.obj_lo}-{self.obj_hi}px) in a "
            f"{s}px image; lower max_objects / object_size or raise image_size"
        )

    # rendering ------------------------------------------------------------------------------------------------

    def render(self, scene: dict[str, Any]) -> tuple[Image.Image, np.ndarray]:
        """Draw the RGB image and its item-index mask with the same PIL primitives, so both agree pixel for pixel."""
        s = self.spec.image_size
        image = Image.new("RGB", (s, s), tuple(scene["background"]))
        mask = Image.new("L", (s, s), 0)
        draw, mdraw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
        for i, it in enumerate(scene["items"]):
            box = tuple(it["bbox"])
            if it["kind"] == "object":
                _draw_shape(draw, it["shape"], box, COLORS[it["color"]])
                _draw_shape(mdraw, it["shape"], box, i + 1)
            else:
                x0, y0, x1, y1 = box
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=_WORD_BOX)
                left, top, _, _ = draw.textbbox((0, 0), it["word"], font=self.font)
                draw.text(
                    (x0 + _WORD_PAD - left, y0 + _WORD_PAD - top), it["word"], fill=_WORD_INK, font=self.font
                )
                mdraw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=i + 1)
        return image, np.asarray(mask, dtype=np.uint8)  # (H, W)

    def emit(
        self, split: str, index: int, scene: dict[str, Any], scenes: list[dict], masks: np.ndarray
    ) -> str:
        """Render and save one image, record its scene and mask; returns the relative image path."""
        rel = f"images/{split}/{index:06d}.png"
        scene = {
            "image": rel,
            "background": scene["background"],
            "items": scene["items"],
            "caption": caption(scene),
        }
        image, mask = self.render(scene)
        image.save(self.out / rel, format="PNG")
        masks[index] = mask
        scenes.append(scene)
        self.done += 1
        if self.progress is not None and (self.done % _PROGRESS_EVERY == 0 or self.done == self.total):
            self.progress(self.done, self.total)
        return rel


def _write_dataset(spec: SynthVQASpec, out: Path, progress: Progress | None) -> None:
    """Generate all splits into `out`; manifest.json last."""
    n_eval = spec.eval_questions_per_category * len(CATEGORIES)
    writer = _Writer(spec, out, spec.train_images + 2 * n_eval, progress)
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
    spec: SynthVQASpec, writer: _Writer, rng: np.random.Generator, scenes: list[dict], masks: np.ndarray
) -> list[dict]:
    """Generic scenes, `questions_per_image` questions each; the least-asked supported category goes next."""
    asked_per_category = dict.fromkeys(CATEGORIES, 0)
    yes_no = {"position": {"yes": 0, "no": 0}, "existence": {"yes": 0, "no": 0}}
    samples: list[dict] = []
    for index in range(spec.train_images):
        for _ in range(_SCENE_TRIES):  # retried only when the scene was already drawn
            n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
            word = WORDS[int(rng.integers(len(WORDS)))] if rng.random() < _TRAIN_WORD_PROBABILITY else None
            scene = writer.new_scene(rng, _sample_objects(rng, n), word)
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
                    want = _less_frequent(yes_no[category], rng) if category in yes_no else None
                    qa = _ask(category, scene["items"], rng, spec.image_size, want=want)
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
            samples.append(_sample(f"train-{index:06d}-{len(asked) - 1}", rel, category, question, answer))
    return samples


def _eval_split(
    spec: SynthVQASpec,
    writer: _Writer,
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
    schedule = {c: _balanced(rng, answers[c], n) for c in CATEGORIES}
    relations = _balanced(rng, list(RELATIONS), n)
    samples: list[dict] = []
    for index in range(n * len(CATEGORIES)):
        category, k = CATEGORIES[index % len(CATEGORIES)], index // len(CATEGORIES)
        target = schedule[category][k]
        for _ in range(_SCENE_TRIES):
            objects, word = _eval_content(spec, rng, category, target)
            scene = writer.new_scene(rng, objects, word)
            if scene is None:
                continue
            qa = _ask(category, scene["items"], rng, spec.image_size, want=target, relation=relations[k])
            if qa is not None:
                break
            writer.forget(scene)  # never emitted, so it may still be drawn later
        else:
            raise RuntimeError(f"synthvqa could not build a {category!r} scene with answer {target!r}")
        rel = writer.emit(split, index, scene, scenes, masks)
        samples.append(_sample(f"{split}-{index:06d}-0", rel, category, *qa))
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
        objects = _sample_objects(rng, n, first=(shape, target), avoid_shape=shape)
    elif category == "shape":  # the asked colour occurs once and has the target shape
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        objects = _sample_objects(rng, n, first=(target, color), avoid_color=color)
    else:
        objects = _sample_objects(rng, n)
    if category == "text":
        word: str | None = target
    else:
        word = WORDS[int(rng.integers(len(WORDS)))] if rng.random() < spec.word_probability else None
    return objects, word


# --------------------------------------------------------------------------------------------------------------
# Questions


def _ask(
    category: str,
    items: Sequence[dict[str, Any]],
    rng: np.random.Generator,
    image_size: int,
    *,
    want: str | None = None,
    relation: str | None = None,
) -> tuple[str, str] | None:
    """One (question, answer) of `category` about the scene, with answer `want` if given; None if impossible."""
    objects = [it for it in items if it["kind"] == "object"]
    words = [it["word"] for it in items if it["kind"] == "word"]
    templates = _TEMPLATES[category]
    template = templates[int(rng.integers(len(templates)))]
    shapes = [o["shape"] for o in objects]
    colors = [o["color"] for o in objects]
    if category == "color":
        pool = [o for o in objects if shapes.count(o["shape"]) == 1 and want in (None, o["color"])]
        if not pool:
            return None
        o = pool[int(rng.integers(len(pool)))]
        return template.format(shape=o["shape"]), o["color"]
    if category == "shape":
        pool = [o for o in objects if colors.count(o["color"]) == 1 and want in (None, o["shape"])]
        if not pool:
            return None
        o = pool[int(rng.integers(len(pool)))]
        return template.format(color=o["color"]), o["shape"]
    if category == "count":
        answer = str(len(objects))
        return (template, answer) if objects and want in (None, answer) else None
    if category == "position":
        return _ask_position(objects, rng, image_size, template, want, relation)
    if category == "existence":
        return _ask_existence(objects, rng, template, want)
    if category == "text":
        if not words or want not in (None, words[0]):
            return None
        return template, words[0]
    raise ValueError(f"unknown synthvqa category {category!r}")


def _ask_position(
    objects: list[dict[str, Any]],
    rng: np.random.Generator,
    image_size: int,
    template: str,
    want: str | None,
    relation: str | None,
) -> tuple[str, str] | None:
    """Relation between two uniquely described objects whose centres differ by >= 1/8 image along the axis."""
    relation = relation or RELATIONS[int(rng.integers(len(RELATIONS)))]
    axis = 0 if relation in ("left of", "right of") else 1
    before = relation in ("left of", "above")  # true iff the first object has the smaller coordinate
    centres = [_centre(o["bbox"])[axis] for o in objects]
    pool: list[tuple[int, int, str]] = []
    for i in range(len(objects)):
        for j in range(len(objects)):
            delta = centres[j] - centres[i]  # > 0: object i is left of / above object j
            if i == j or abs(delta) < image_size / 8:
                continue
            answer = "yes" if (delta > 0) == before else "no"
            if want in (None, answer):
                pool.append((i, j, answer))
    if not pool:
        return None
    i, j, answer = pool[int(rng.integers(len(pool)))]
    a, b = objects[i], objects[j]
    return template.format(c1=a["color"], s1=a["shape"], rel=relation, c2=b["color"], s2=b["shape"]), answer


def _ask_existence(
    objects: list[dict[str, Any]], rng: np.random.Generator, template: str, want: str | None
) -> tuple[str, str] | None:
    """POPE-style: negatives recombine a present colour with a present shape when possible."""
    if want is None:
        want = "yes" if rng.random() < 0.5 else "no"
    present = [(o["color"], o["shape"]) for o in objects]
    if want == "yes":
        if not present:
            return None
        color, shape = present[int(rng.integers(len(present)))]
    else:
        # Iterate the canonical tuples, never sets: set order of strings varies between processes.
        pool = [
            (c, s)
            for c in COLORS
            for s in SHAPES
            if (c, s) not in present
            and any(c == pc for pc, _ in present)
            and any(s == ps for _, ps in present)
        ]
        if not pool:
            pool = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        color, shape = pool[int(rng.integers(len(pool)))]
    return template.format(color=color, shape=shape), want


# --------------------------------------------------------------------------------------------------------------
# Helpers


def _sample(sample_id: str, image: str, category: str, question: str, answer: str) -> dict[str, Any]:
    """A LLaVA-format single-turn sample."""
    return {
        "id": sample_id,
        "image": image,
        "category": category,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def _sample_objects(
    rng: np.random.Generator,
    n: int,
    *,
    first: tuple[str, str] | None = None,
    avoid_shape: str | None = None,
    avoid_color: str | None = None,
) -> list[tuple[str, str]]:
    """n (shape, colour) pairs, all combinations distinct (so "the red circle" is always unique), shuffled."""
    objects = [first] if first is not None else []
    pool = [
        (s, c)
        for s in SHAPES
        for c in COLORS
        if s != avoid_shape and c != avoid_color and (s, c) not in objects
    ]
    picks = rng.choice(len(pool), size=n - len(objects), replace=False)
    objects += [pool[int(p)] for p in picks]
    order = rng.permutation(len(objects))
    return [objects[int(p)] for p in order]


def _signature(scene: dict[str, Any]) -> str:
    """Canonical text of what determines the pixels."""
    return json.dumps([scene["background"], scene["items"]])


def _less_frequent(tally: dict[str, int], rng: np.random.Generator) -> str:
    """The yes/no answer asked less so far (ties at random): keeps train yes/no answers at 50/50."""
    if tally["yes"] != tally["no"]:
        return "yes" if tally["yes"] < tally["no"] else "no"
    return "yes" if rng.random() < 0.5 else "no"


def _balanced(rng: np.random.Generator, values: list[str], n: int) -> list[str]:
    """n values cycling through `values` then shuffled: every answer equally often (up to one)."""
    cycled = [values[k % len(values)] for k in range(n)]
    return [cycled[int(p)] for p in rng.permutation(n)]


def _centre(bbox: Sequence[int]) -> tuple[float, float]:
    x0, y0, x1, y1 = bbox
    return (x0 + x1) / 2, (y0 + y1) / 2


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: Sequence[int], fill: int | tuple[int, int, int]
) -> None:
    """Filled shape inside box (x1/y1 exclusive); the same calls draw the RGB image and the mask."""
    x0, y0, x1, y1 = box
    r, b = x1 - 1, y1 - 1  # PIL coordinates are inclusive
    cx, cy = (x0 + r) // 2, (y0 + b) // 2
    if shape == "circle":
        draw.ellipse((x0, y0, r, b), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, r, b), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (r, b), (x0, b)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (r, cy), (cx, b), (x0, cy)], fill=fill)
    elif shape == "cross":
        side = x1 - x0
        t = max(2, side // 3)  # bar thickness
        a = x0 + (side - t) // 2
        c = y0 + (side - t) // 2
        draw.rectangle((a, y0, a + t - 1, b), fill=fill)
        draw.rectangle((x0, c, r, c + t - 1), fill=fill)
    else:
        raise ValueError(f"unknown synthvqa shape {shape!r}")


@functools.lru_cache(maxsize=8)
def _load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's scalable default font (needs FreeType, Pillow >= 10.1); bitmap default otherwise."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _word_box_size(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, word: str) -> tuple[int, int]:
    """(w, h) of the white box around the rendered word."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    return int(right - left) + 2 * _WORD_PAD, int(bottom - top) + 2 * _WORD_PAD


def _dump_json(path: Path, obj: Any, indent: int | None = None) -> None:
    path.write_text(json.dumps(obj, indent=indent) + "\n")
