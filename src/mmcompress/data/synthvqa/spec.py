"""What determines the synthvqa benchmark: its vocabulary (colours, shapes, words, relations, question
categories), the spec fields hashed into the cache key, and the generator's code version."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mmcompress.errors import ConfigError
from mmcompress.versioning import PACKAGE, source_digest

# The generator's code version keys its cache: every module of this package.
SYNTHVQA_VERSION = source_digest(
    *[p.relative_to(PACKAGE).as_posix() for p in Path(__file__).resolve().parent.glob("*.py")]
)

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
