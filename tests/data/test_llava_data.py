"""The LLaVA-format loader: validation errors, `<image>` placement and answer-only labels."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from mmcompress.data.llava import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    encode_for_training,
    encode_prompts,
    load_split,
    place_image,
)
from mmcompress.errors import UserError
from mmcompress.model.llm import build_word_tokenizer


def write_dataset(root, records, images=("a.png",)):
    for name in images:
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(root / name)
    (root / "train.json").write_text(json.dumps(records))
    return root / "train.json"


def sample(value="<image>\nwhat color?", answer="red", image="a.png", **extra):
    return {
        "id": "s0",
        "image": image,
        "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": answer}],
        **extra,
    }


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        ("before", f"{IMAGE_TOKEN}\nwhat?"),
        ("after", f"what?\n{IMAGE_TOKEN}"),
        ("keep", f"what? {IMAGE_TOKEN}"),
    ],
)
def test_image_placement(position, expected):
    assert place_image(f"what? {IMAGE_TOKEN}", position) == expected


def test_multi_turn_labels_supervise_every_answer_and_nothing_else(tmp_path):
    record = {
        "id": "m",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "what color?\n<image>"},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "what shape?"},
            {"from": "gpt", "value": "circle"},
        ],
    }
    split = load_split(write_dataset(tmp_path, [record]), tmp_path, "keep")
    tokenizer = build_word_tokenizer(["what color shape red circle"])
    [(ids, labels)] = encode_for_training(split.samples, tokenizer, 256)
    supervised = tokenizer.convert_ids_to_tokens(
        [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    )
    assert supervised == ["red", "</s>", "circle", "</s>"]
    assert ids.count(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)) == 1
    prompt = tokenizer.convert_ids_to_tokens(encode_prompts(split.samples, tokenizer)[0])
    assert prompt[-2:] == ["assistant", ":"] and "red" not in prompt


def test_template_that_does_not_tokenise_consistently_is_an_error(tmp_path):
    split = load_split(write_dataset(tmp_path, [sample()]), tmp_path, "before")
    tokenizer = build_word_tokenizer(["what color red"])
    # the generation prompt differs from how the answered turn starts: a LLaVA "tokenization mismatch"
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}system : {% endif %}"
    with pytest.raises(UserError, match="does not tokenise consistently"):
        encode_for_training(split.samples, tokenizer, 256)


def test_truncation_that_removes_the_answer_is_an_error(tmp_path):
    split = load_split(write_dataset(tmp_path, [sample()]), tmp_path, "before")
    tokenizer = build_word_tokenizer(["what color red"])
    with pytest.raises(UserError, match="no answer tokens left"):
        encode_for_training(split.samples, tokenizer, 4)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON (line 1"),
        ("{}", "must hold a JSON list"),
        ("[]", "holds no samples"),
        (json.dumps([{"id": "x", "conversations": []}]), "needs 'image' and 'conversations'"),
        (json.dumps([sample(answer=None)]), "bad turn"),
        (json.dumps([sample(image="missing.png")]), "missing, e.g."),
        (json.dumps([sample(value="<image> <image> two?")]), "more than one"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    write_dataset(tmp_path, [])
    (tmp_path / "train.json").write_text(content)
    with pytest.raises(UserError, match=re.escape(message)) as excinfo:
        load_split(tmp_path / "train.json", tmp_path, "keep")
    assert "\n" not in str(excinfo.value)


def test_corrupt_image_is_named(tmp_path):
    from mmcompress.data.llava import open_image

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(UserError, match=r"bad\.png cannot be read"):
        open_image(bad)
