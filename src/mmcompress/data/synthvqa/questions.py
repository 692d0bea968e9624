"""Questions about a scene: one (question, answer) of a category, with a wanted answer when the
evaluation splits balance them, and the LLaVA-format sample that carries it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmcompress.data.synthvqa.scenes import centre
from mmcompress.data.synthvqa.spec import COLORS, RELATIONS, SHAPES

# ~2 phrasings per category keep the word-level question vocabulary small.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": ("what color is the {shape}?", "what is the color of the {shape}?"),
    "shape": ("what shape is the {color} object?", "what is the shape of the {color} object?"),
    "count": ("how many objects are there?", "how many shapes are in the image?"),
    "position": ("is the {c1} {s1} {rel} the {c2} {s2}?",),
    "existence": ("is there a {color} {shape}?", "is there a {color} {shape} in the image?"),
    "text": ("what word is written in the image?", "what does the text say?"),
}


def ask(
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
    centres = [centre(o["bbox"])[axis] for o in objects]
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


def llava_sample(sample_id: str, image: str, category: str, question: str, answer: str) -> dict[str, Any]:
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


def sample_objects(
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


def less_frequent(tally: dict[str, int], rng: np.random.Generator) -> str:
    """The yes/no answer asked less so far (ties at random): keeps train yes/no answers at 50/50."""
    if tally["yes"] != tally["no"]:
        return "yes" if tally["yes"] < tally["no"] else "no"
    return "yes" if rng.random() < 0.5 else "no"


def balanced(rng: np.random.Generator, values: list[str], n: int) -> list[str]:
    """n values cycling through `values` then shuffled: every answer equally often (up to one)."""
    cycled = [values[k % len(values)] for k in range(n)]
    return [cycled[int(p)] for p in rng.permutation(n)]
