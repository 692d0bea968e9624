"""Image pairs with corresponding keypoints, for the correspondence (C) score.

Generated pairs warp any image by a known transform (affine warp, scale, crop or a photometric change)
and map keypoints through it; SPair-71k pairs come from its annotation files. Every pair is resized to
one square size, so the features of any expert cover the whole image and keypoints stay in pixels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from mmcompress.data.llava import open_image
from mmcompress.errors import UserError

TRANSFORMS = ("affine", "scale", "crop", "photometric")


@dataclass
class KeypointPair:
    source: Image.Image
    target: Image.Image  # both size × size
    source_points: np.ndarray  # (K, 2) x, y in pixels
    target_points: np.ndarray  # (K, 2) where each source point lands in the target
    extent: float  # PCK's reference length: the longer side of the target object's box (pixels)
    kind: str  # the transform, or the SPair category


def _transform(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (3, 3) source→target pixel map for `kind` (the identity for a photometric change)."""
    centre = np.array([[1, 0, -size / 2], [0, 1, -size / 2], [0, 0, 1]])
    back = np.array([[1, 0, size / 2], [0, 1, size / 2], [0, 0, 1]])
    if kind == "photometric":
        return np.eye(3)
    if kind == "affine":
        angle = np.deg2rad(rng.uniform(-25, 25))
        scale, shear = rng.uniform(0.85, 1.15), rng.uniform(-0.15, 0.15)
        linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        linear = linear @ np.array([[1, shear], [0, 1]])
        shift = rng.uniform(-0.08, 0.08, 2) * size
    elif kind == "scale":
        linear, shift = np.eye(2) * rng.uniform(1.2, 1.6), np.zeros(2)  # zoom in about the centre
    else:  # crop: a random window of 60–85 % of the side, resized to the full size
        side = rng.uniform(0.6, 0.85)
        linear = np.eye(2) / side
        shift = rng.uniform(-(1 - side) / 2, (1 - side) / 2, 2) * size / side
    matrix = np.eye(3)
    matrix[:2, :2], matrix[:2, 2] = linear, shift
    return back @ matrix @ centre


def _keypoints(image: Image.Image, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` pixel centres drawn where the image has local contrast (edges and objects, not flat
    background, whose correspondence no feature can decide)."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    padded = np.pad(grey, 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5))  # (H, W, 5, 5)
    contrast = windows.std(axis=(2, 3)).ravel() + 1e-3
    picked = rng.choice(
        contrast.size, size=min(count, contrast.size), replace=False, p=contrast / contrast.sum()
    )
    rows, cols = np.divmod(picked, grey.shape[1])
    return np.stack([cols + 0.5, rows + 0.5], 1)  # (K, 2) x, y


def generated_pairs(
    images: Sequence[Path], count: int, size: int, *, keypoints: int = 16, seed: int = 0
) -> list[KeypointPair]:
    """`count` pairs cycling over `images` and the four transforms; keypoints whose image leaves the
    target are dropped. PCK's reference length is the image side."""
    rng = np.random.default_rng(seed)
    pairs = []
    for n in range(count):
        source = open_image(images[n % len(images)]).resize((size, size), Image.BICUBIC)
        kind = TRANSFORMS[n % len(TRANSFORMS)]
        matrix = _transform(kind, size, rng)
        inverse = np.linalg.inv(matrix)[:2].ravel()  # PIL maps each target pixel back to the source
        target = source.transform(
            (size, size), Image.AFFINE, tuple(inverse), Image.BILINEAR, fillcolor=(128,) * 3
        )
        if kind == "photometric":
            target = ImageEnhance.Brightness(target).enhance(rng.uniform(0.6, 1.4))
            target = ImageEnhance.Contrast(target).enhance(rng.uniform(0.6, 1.4))
            target = ImageEnhance.Color(target).enhance(rng.uniform(0.3, 1.7))
        points = _keypoints(source, 4 * keypoints, rng)
        mapped = points @ matrix[:2, :2].T + matrix[:2, 2]
        inside = ((mapped >= 1) & (mapped <= size - 1)).all(1)
        points, mapped = points[inside][:keypoints], mapped[inside][:keypoints]
        if len(points):
            pairs.append(KeypointPair(source, target, points, mapped, float(size), kind))
    return pairs


def load_spair(root: Path, split: str, size: int, limit: int | None = None) -> list[KeypointPair]:
    """SPair-71k pairs: PairAnnotation/<split>/*.json ({src_imname, trg_imname, category, src_kps,
    trg_kps, trg_bndbox}) over JPEGImages/<category>/; the reference length is the target box's longer side."""
    root = Path(root).expanduser()
    folder = root / "PairAnnotation" / split
    files = sorted(folder.glob("*.json"))[:limit] if folder.is_dir() else []
    if not files:
        raise UserError(
            f"no SPair-71k pairs in {folder}; point --spair at the SPair-71k folder (README: AC score)"
        )
    pairs = []
    for file in files:
        try:
            a = json.loads(file.read_text())
            category = a["category"]
            images = [open_image(root / "JPEGImages" / category / a[k]) for k in ("src_imname", "trg_imname")]
            points = [np.asarray(a[k], dtype=np.float64).reshape(-1, 2) for k in ("src_kps", "trg_kps")]
            box = np.asarray(a["trg_bndbox"], dtype=np.float64)
        except (json.JSONDecodeError, KeyError, ValueError) as exc:
            raise UserError(
                f"{file} is not an SPair-71k pair annotation ({type(exc).__name__}: {exc})"
            ) from None
        scales = [np.array([size / im.width, size / im.height]) for im in images]
        box = box.reshape(2, 2) * scales[1]
        pairs.append(
            KeypointPair(
                images[0].resize((size, size), Image.BICUBIC),
                images[1].resize((size, size), Image.BICUBIC),
                points[0] * scales[0],
                points[1] * scales[1],
                float((box[1] - box[0]).max()),
                category,
            )
        )
    return pairs
