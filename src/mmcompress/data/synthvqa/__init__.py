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

from mmcompress.data.synthvqa.generate import generate
from mmcompress.data.synthvqa.scenes import caption
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
