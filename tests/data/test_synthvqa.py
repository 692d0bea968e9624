"""synthvqa: determinism, caching, atomic writes, and answers that really follow from the scenes and pixels."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmcompress.data.synthvqa import (
    CATEGORIES,
    COLORS,
    SHAPES,
    SYNTHVQA_VERSION,
    WORDS,
    SynthVQASpec,
    caption,
    generate,
)
from mmcompress.errors import ConfigError

SMALL = SynthVQASpec(train_images=60, eval_questions_per_category=5)
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SMALL, tmp_path_factory.mktemp("synthvqa"))


def _load(d: Path, name: str) -> list[dict]:
    return json.loads((d / name).read_text())


def _pixels(d: Path, rel: str) -> np.ndarray:
    with Image.open(d / rel) as im:
        return np.asarray(im.convert("RGB"))  # (H, W, 3)


def _qa(sample: dict) -> tuple[str, str]:
    human, gpt = sample["conversations"]
    assert human["from"] == "human" and gpt["from"] == "gpt"
    assert human["value"].startswith("<image>\n")
    return human["value"][len("<image>\n") :], gpt["value"]


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# --- independent re-derivation of every answer from the scene items ---------------------------------------------


def _objects(scene: dict) -> list[dict]:
    return [it for it in scene["items"] if it["kind"] == "object"]


def _the(scene: dict, color: str | None = None, shape: str | None = None) -> dict:
    """The single object matching the description (a question must never be ambiguous)."""
    hits = [o for o in _objects(scene) if color in (None, o["color"]) and shape in (None, o["shape"])]
    assert len(hits) == 1, f"ambiguous referent {color} {shape}: {scene}"
    return hits[0]


def _derive(category: str, question: str, scene: dict, size: int) -> str:
    """The answer computed from scratch from the question text and scene items."""
    if category == "color":
        m = re.fullmatch(r"what (?:color is the|is the color of the) (\w+)\?", question)
        assert m, question
        return _the(scene, shape=m[1])["color"]
    if category == "shape":
        m = re.fullmatch(r"what (?:shape is the|is the shape of the) (\w+) object\?", question)
        assert m, question
        return _the(scene, color=m[1])["shape"]
    if category == "count":
        assert question in ("how many objects are there?", "how many shapes are in the image?"), question
        return str(len(_objects(scene)))
    if category == "position":
        m = re.fullmatch(r"is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+)\?", question)
        assert m, question
        a, b = _the(scene, m[1], m[2]), _the(scene, m[4], m[5])
        axis = 0 if m[3] in ("left of", "right of") else 1
        ca = (a["bbox"][axis] + a["bbox"][axis + 2]) / 2
        cb = (b["bbox"][axis] + b["bbox"][axis + 2]) / 2
        assert abs(ca - cb) >= size / 8, "position asked about nearly aligned objects"
        truth = ca < cb if m[3] in ("left of", "above") else ca > cb
        return "yes" if truth else "no"
    if category == "existence":
        m = re.fullmatch(r"is there a (\w+) (\w+)(?: in the image)?\?", question)
        assert m, question
        present = {(o["color"], o["shape"]) for o in _objects(scene)}
        return "yes" if (m[1], m[2]) in present else "no"
    if category == "text":
        assert question in ("what word is written in the image?", "what does the text say?"), question
        words = [it["word"] for it in scene["items"] if it["kind"] == "word"]
        assert len(words) == 1
        return words[0]
    raise AssertionError(category)


def test_answers_follow_from_scenes(small: Path) -> None:
    allowed = set(COLORS) | set(SHAPES) | set(WORDS) | {"1", "2", "3", "yes", "no"}
    vocab: set[str] = set()
    for split in SPLITS:
        scenes = {s["image"]: s for s in _load(small, f"scenes/{split}.json")}
        samples = _load(small, f"{split}.json")
        assert samples
        for sample in samples:
            assert sample["id"].startswith(f"{split}-") and sample["image"].startswith(f"images/{split}/")
            assert sample["category"] in CATEGORIES
            question, answer = _qa(sample)
            assert question.endswith("?") and question == question.lower() and "  " not in question
            assert answer in allowed
            vocab.update(question.split())
            assert _derive(sample["category"], question, scenes[sample["image"]], SMALL.image_size) == answer
    assert len(vocab) < 60  # ~2 phrasings per category: the word-level tokenizer stays tiny


def test_existence_negatives_are_adversarial(small: Path) -> None:
    """Most "no" answers pair a present colour with a present shape (POPE adversarial)."""
    scenes = {s["image"]: s for split in SPLITS for s in _load(small, f"scenes/{split}.json")}
    adversarial = possible = 0
    for split in SPLITS:
        for sample in _load(small, f"{split}.json"):
            question, answer = _qa(sample)
            if sample["category"] != "existence" or answer != "no":
                continue
            color, shape = re.match(r"is there a (\w+) (\w+)", question).groups()
            objs = _objects(scenes[sample["image"]])
            colors, shapes = {o["color"] for o in objs}, {o["shape"] for o in objs}
            present = {(o["color"], o["shape"]) for o in objs}
            if any((c, s) not in present for c in colors for s in shapes):
                possible += 1
                adversarial += color in colors and shape in shapes
    assert possible > 0 and adversarial == possible


def test_eval_splits_have_exact_category_counts(small: Path) -> None:
    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest["name"] == "synthvqa" and manifest["version"] == SYNTHVQA_VERSION
    assert manifest["key"] == SMALL.cache_key() and small.name == f"synthvqa-{SMALL.cache_key()}"
    for split in ("val", "test"):
        samples = _load(small, f"{split}.json")
        counts = Counter(s["category"] for s in samples)
        assert counts == dict.fromkeys(CATEGORIES, SMALL.eval_questions_per_category)
        assert manifest["counts"][split] == dict(counts)
        assert len({s["image"] for s in samples}) == len(samples)  # one question per image
        assert [s["category"] for s in samples[:6]] == list(CATEGORIES)  # interleaved
    train = _load(small, "train.json")
    assert len(train) == SMALL.train_images * SMALL.questions_per_image
    per_image = Counter(s["image"] for s in train)
    assert len(per_image) == SMALL.train_images and set(per_image.values()) == {SMALL.questions_per_image}
    for image in per_image:  # no question repeated on the same image
        questions = [_qa(s)[0] for s in train if s["image"] == image]
        assert len(set(questions)) == len(questions)


def test_splits_share_no_images(small: Path) -> None:
    seen_paths: dict[str, str] = {}
    seen_pixels: dict[str, str] = {}
    for split in SPLITS:
        scenes = _load(small, f"scenes/{split}.json")
        for k, scene in enumerate(scenes):
            assert scene["image"] == f"images/{split}/{k:06d}.png"
            assert scene["image"] not in seen_paths
            seen_paths[scene["image"]] = split
            digest = hashlib.sha256(_pixels(small, scene["image"]).tobytes()).hexdigest()
            assert seen_pixels.get(digest, split) == split, "pixel-identical image in two splits"
            seen_pixels[digest] = split


def test_masks_match_items_and_pixels(small: Path) -> None:
    size = SMALL.image_size
    for split in SPLITS:
        scenes = _load(small, f"scenes/{split}.json")
        with np.load(small / "scenes" / f"{split}_masks.npz") as npz:
            masks = npz["masks"]
        assert masks.shape == (len(scenes), size, size) and masks.dtype == np.uint8
        for scene, mask in zip(scenes, masks, strict=True):
            pixels = _pixels(small, scene["image"])
            assert pixels.shape == (size, size, 3)
            assert scene["caption"] == caption(scene)
            assert int(mask.max()) <= len(scene["items"])
            assert np.all(pixels[mask == 0] == scene["background"])
            for i, item in enumerate(scene["items"]):
                x0, y0, x1, y1 = item["bbox"]
                assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
                ys, xs = np.nonzero(mask == i + 1)
                assert len(xs) > 0, f"item {i} has no pixels"
                assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
                if item["kind"] == "object":
                    assert np.all(pixels[mask == i + 1] == COLORS[item["color"]])
                else:  # the whole box: white with dark text
                    assert len(xs) == (x1 - x0) * (y1 - y0)
                    box = pixels[y0:y1, x0:x1]
                    assert (box == 255).all(axis=-1).any() and (box.max(axis=-1) < 100).any()
            for a in range(len(scene["items"])):  # no two items touch
                for b in range(a + 1, len(scene["items"])):
                    p, q = scene["items"][a]["bbox"], scene["items"][b]["bbox"]
                    assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1]


def test_deterministic_and_seed_dependent(small: Path, tmp_path: Path) -> None:
    again = generate(SMALL, tmp_path / "a")
    assert again.name == small.name
    assert _files(again) == _files(small)  # JSON byte-identical, PNGs and masks too
    for rel in ("images/train/000000.png", "images/test/000005.png"):
        assert np.array_equal(_pixels(again, rel), _pixels(small, rel))

    other = generate(SynthVQASpec(seed=1, train_images=60, eval_questions_per_category=5), tmp_path / "b")
    assert other.name != small.name
    for name in ("train.json", "test.json", "scenes/val.json"):
        assert (other / name).read_bytes() != (small / name).read_bytes()
    assert not np.array_equal(
        _pixels(other, "images/train/000000.png"), _pixels(small, "images/train/000000.png")
    )


def test_second_call_reuses_directory(tmp_path: Path) -> None:
    spec = SynthVQASpec(train_images=12, eval_questions_per_category=2)
    calls: list[tuple[int, int]] = []
    first = generate(spec, tmp_path, progress=lambda done, total: calls.append((done, total)))
    total = spec.train_images + 2 * len(CATEGORIES) * spec.eval_questions_per_category
    assert calls and calls[-1] == (total, total)
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    calls.clear()
    second = generate(spec, tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert second == first and not calls
    assert {p: p.stat().st_mtime_ns for p in second.rglob("*")} == stamps
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary leftovers


def test_interrupted_generation_leaves_nothing_complete(tmp_path: Path) -> None:
    spec = SynthVQASpec(train_images=150, eval_questions_per_category=2)

    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(spec, tmp_path, progress=boom)
    assert not list(tmp_path.rglob("manifest.json"))
    assert not (tmp_path / f"synthvqa-{spec.cache_key()}").exists()
    assert not list(tmp_path.iterdir())  # the temporary directory is cleaned up too

    out = generate(spec, tmp_path)
    assert json.loads((out / "manifest.json").read_text())["key"] == spec.cache_key()
    assert len(_load(out, "train.json")) == spec.train_images * spec.questions_per_image


def test_incomplete_directory_is_regenerated(tmp_path: Path) -> None:
    spec = SynthVQASpec(train_images=6, eval_questions_per_category=1)
    stale = tmp_path / f"synthvqa-{spec.cache_key()}"
    stale.mkdir()
    (stale / "train.json").write_text("[]")
    out = generate(spec, tmp_path)
    assert out == stale and (out / "manifest.json").exists()
    assert len(_load(out, "train.json")) == spec.train_images * spec.questions_per_image


def test_answers_are_balanced(tmp_path: Path) -> None:
    """A blind per-category majority-answer baseline must stay low."""
    spec = SynthVQASpec(train_images=300, eval_questions_per_category=60)
    out = generate(spec, tmp_path)
    limits = {"color": 0.3, "shape": 0.3, "count": 0.45, "position": 0.6, "existence": 0.6, "text": 0.2}
    for split, slack in (("test", 0.0), ("train", 0.05)):
        answers: dict[str, Counter] = defaultdict(Counter)
        for sample in _load(out, f"{split}.json"):
            answers[sample["category"]][_qa(sample)[1]] += 1
        for category, limit in limits.items():
            majority = max(answers[category].values()) / sum(answers[category].values())
            assert majority <= limit + slack, (split, category, answers[category])
        if split == "train":  # categories roughly 1/6 each
            shares = {
                c: sum(answers[c].values()) / (spec.train_images * spec.questions_per_image)
                for c in CATEGORIES
            }
            assert all(0.12 <= v <= 0.22 for v in shares.values()), shares
    scenes = _load(out, "scenes/train.json")
    n_objects = Counter(len(_objects(s)) for s in scenes)
    assert set(n_objects) == {1, 2, 3}
    with_word = sum(any(it["kind"] == "word" for it in s["items"]) for s in scenes) / len(scenes)
    assert 0.4 <= with_word <= 0.6


def test_caption_describes_layout() -> None:
    scene = {
        "background": [236, 236, 236],
        "items": [
            {"kind": "object", "shape": "square", "color": "blue", "bbox": [40, 10, 56, 26]},
            {"kind": "word", "word": "cat", "bbox": [5, 45, 25, 57]},
            {"kind": "object", "shape": "circle", "color": "red", "bbox": [2, 8, 18, 24]},
            {"kind": "object", "shape": "cross", "color": "green", "bbox": [42, 40, 58, 56]},
        ],
    }
    assert caption(scene) == "a red circle left of a blue square above a green cross . the word cat"
    assert caption({"items": [scene["items"][1]]}) == "the word cat"


def test_spec_key_and_validation() -> None:
    assert SynthVQASpec().cache_key() == SynthVQASpec().cache_key()
    assert re.fullmatch(r"[0-9a-f]{12}", SynthVQASpec().cache_key())
    assert SynthVQASpec(text_size=8).cache_key() != SynthVQASpec().cache_key()
    assert SynthVQASpec(object_size=[14, 22]).cache_key() == SynthVQASpec().cache_key()  # type: ignore[arg-type]
    assert len(COLORS) == 6 and len(SHAPES) == 5 and len(WORDS) == 16
    assert not set(WORDS) & (set(COLORS) | set(SHAPES) | {"yes", "no"})
    with pytest.raises(ConfigError):
        SynthVQASpec(max_objects=1)
    with pytest.raises(ConfigError):
        SynthVQASpec(word_probability=1.5)


def test_sparse_world_leaves_most_tokens_background(compose, tmp_path: Path) -> None:
    """world=sparse: objects and the word cover a few percent of the 16×16 cells, so pruning to 11% (28
    cells) can keep every item while a uniform choice keeps mostly background."""
    from mmcompress.data.world import world_spec

    cfg = compose("world=sparse")
    assert list(cfg.grid) == [16, 16] and cfg.world.image_size == 224
    spec = dataclasses.replace(world_spec(cfg), train_images=40, eval_questions_per_category=2)
    root = generate(spec, tmp_path / "sparse")
    with np.load(root / "scenes" / "train_masks.npz") as npz:
        masks = npz["masks"]  # (n, 224, 224)
    cells = masks.reshape(len(masks), 16, 14, 16, 14).max(axis=(2, 4)) > 0  # (n, 16, 16): any item pixel
    covered = cells.reshape(len(masks), -1).sum(axis=1)  # item cells per image
    assert (masks > 0).mean() < 0.05  # items are < 5% of the pixels
    assert covered.max() <= 28 and covered.mean() < 14  # every image's items fit in 11% of the cells
