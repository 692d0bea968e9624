"""Scenes of the synthetic world: non-overlapping layouts of shapes and a rendered word, drawn as an RGB
image and an item-index mask with the same PIL primitives, and a caption that describes them."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmcompress.data.synthvqa.spec import COLORS, WORDS, SynthVQASpec
from mmcompress.errors import ConfigError

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
_PLACE_TRIES = 64  # candidate positions per item (drawn at once)
_LAYOUT_TRIES = 200  # full re-layouts before giving up
_PROGRESS_EVERY = 100

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
Progress = Callable[[int, int], None]


class SceneWriter:
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


def caption(scene: dict[str, Any]) -> str:
    """Deterministic text description of a scene, for contrastive (image, text) pretraining.

    Objects are chained left to right, each related to the next by its dominant axis, e.g.
    "a red circle left of a blue square above a green cross . the word cat".
    """
    objects = [it for it in scene["items"] if it["kind"] == "object"]
    words = [it["word"] for it in scene["items"] if it["kind"] == "word"]
    objects.sort(key=lambda it: (centre(it["bbox"]), it["shape"], it["color"]))
    parts: list[str] = []
    for k, it in enumerate(objects):
        if k:
            (px, py), (cx, cy) = centre(objects[k - 1]["bbox"]), centre(it["bbox"])
            dx, dy = cx - px, cy - py  # dx >= 0 by the sort
            parts.append("left of" if dx >= abs(dy) else ("above" if dy > 0 else "below"))
        parts.append(f"a {it['color']} {it['shape']}")
    if words:
        if parts:
            parts.append(".")
        parts.append(f"the word {words[0]}")
    return " ".join(parts) if parts else "an empty image"


def _signature(scene: dict[str, Any]) -> str:
    """Canonical text of what determines the pixels."""
    return json.dumps([scene["background"], scene["items"]])


def centre(bbox: Sequence[int]) -> tuple[float, float]:
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
