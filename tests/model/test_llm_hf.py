"""Any HF causal LM by local path, with its own tokenizer and chat template, through the same stages."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from mmcompress.data.llava import IMAGE_TOKEN
from mmcompress.model.llm import build_word_tokenizer
from tests.conftest import cli, tiny_llama

CHATML = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


@pytest.fixture(scope="module")
def local_llm(tmp_path_factory):
    """A tiny Llama saved like a hub checkpoint: its own tokenizer (no <image> yet) and a ChatML template."""
    path = tmp_path_factory.mktemp("llm")
    words = [
        "what",
        "color",
        "shape",
        "is",
        "the",
        "are",
        "there",
        "how",
        "many",
        "objects",
        "word",
        "written",
        "in",
        "image",
        "text",
        "say",
        "of",
        "yes",
        "no",
    ]
    tokenizer = build_word_tokenizer([" ".join(words)])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    model = tiny_llama(tokenizer, layers=1, heads=2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
def test_train_with_a_local_hf_llm(local_llm, tmp_path, cache_dir):
    result = cli(
        "train", "debug=fast", "logger=none", "llm=hf", f"llm.path={local_llm}", f"paths.runs={tmp_path}"
    )
    run = tmp_path / "default"
    run = next(run.iterdir())
    assert result.stdout.strip().endswith(run.name)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["scores"]["synthvqa"]["n"] == 24
    saved = AutoTokenizer.from_pretrained(run / "checkpoints" / "finetune" / "llm")
    assert saved.chat_template == CHATML and IMAGE_TOKEN in saved.get_vocab()
    assert (
        run / "checkpoints" / "init" / "llm"
    ).exists() is False  # a hub/local LLM is referenced, not copied


def test_missing_llm_path_is_one_line(tmp_path):
    result = cli(
        "train",
        "debug=fast",
        "llm=hf",
        f"llm.path={tmp_path / 'nope'}",
        f"paths.runs={tmp_path}",
        check=False,
    )
    assert result.returncode == 2 and f"llm.path={tmp_path / 'nope'} does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_llm_path_required(tmp_path):
    result = cli("train", "llm=hf", f"paths.runs={tmp_path}", check=False)
    assert result.returncode == 2 and "llm.path is required" in result.stderr
