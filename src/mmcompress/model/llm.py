"""The language model and its tokenizer, registered under the `llm` config's `name`: `tiny` (a small Llama
with a word-level tokenizer, built from the training data inside the run) or `hf` (any causal LM by hub id
or local directory).

Either way the result is a (model, tokenizer) pair whose tokenizer carries its chat template and the
`<image>` special token, saved beside the weights so `from_pretrained(dir)` restores both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import torch
from omegaconf import DictConfig
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from mmcompress.data.llava import IMAGE_TOKEN
from mmcompress.errors import ConfigError, UserError
from mmcompress.hub.resolve import resolve
from mmcompress.registry import Registry

LLMS: Registry[type[LanguageModel]] = Registry("llm")
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN]

# A plain template for the word-level tokenizer: every word of it is in the vocabulary.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}user : {{ message['content'] }} "
    "{% elif message['role'] == 'assistant' %}assistant : {{ message['content'] }} {{ eos_token }} "
    "{% else %}system : {{ message['content'] }} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)
_WORD = re.compile(r"\w+|[^\w\s]")


def build_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A lowercase word-level tokenizer over every word and punctuation mark in `texts`."""
    words = {w for text in texts for w in _WORD.findall(text.replace(IMAGE_TOKEN, " ").lower())}
    words |= set(_WORD.findall("user : assistant : system :"))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *sorted(words)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens=[IMAGE_TOKEN],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny_llm(cfg: DictConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A small Llama-architecture LM initialised from `seed` (its weights are saved with the run)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_position_embeddings,
        initializer_range=cfg.initializer_range,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def load_llm(
    source: str | Path, *, trust_remote_code: bool = False, chat_template: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Any causal LM by hub id or local directory, with `<image>` added to its tokenizer."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if "custom code" in str(exc):
            raise UserError(
                f"the LLM at '{source}' ships its own Python code (auto_map in its config), which is not run "
                "by default; set llm.trust_remote_code=true only if you trust that code"
            ) from None
        raise UserError(
            f"cannot load the LLM from '{source}': {str(exc).splitlines()[0]} "
            "— set llm.path to a local directory or a hub id reachable from this machine"
        ) from None
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template:
        raise ConfigError(
            f"the tokenizer of '{source}' has no chat template; set llm.chat_template to a Jinja template"
        )
    add_image_token(model, tokenizer)
    return model, tokenizer


def add_image_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
    """Register `<image>` as a special token (and a pad token if missing), resizing embeddings to match."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))


class LanguageModel:
    """How the `llm` config's choice is made. One that is `built_in_run` exists only in its run (built from
    the training data and saved with it); the others load from where the config points."""

    built_in_run: ClassVar[bool] = False

    @staticmethod
    def build(
        cfg: DictConfig, texts: Iterable[str], seed: int, cache_root: Path
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
        """The (model, tokenizer) of a new run, from `cfg` (the `llm` config) and the training texts;
        weights the hub cannot provide here are built under `cache_root` from the registry."""
        raise NotImplementedError

    @staticmethod
    def mismatch(cfg: DictConfig, llm: PreTrainedModel) -> str | None:
        """How a run's saved LLM disagrees with the `llm` config it is loaded under (None: it fits)."""
        return None


@LLMS.register("tiny")
class TinyLlama(LanguageModel):
    """A small Llama trained from scratch, with a word-level tokenizer over the training texts."""

    built_in_run = True

    @staticmethod
    def build(cfg, texts, seed, cache_root):
        tokenizer = build_word_tokenizer(texts)
        return build_tiny_llm(cfg, tokenizer, seed), tokenizer

    @staticmethod
    def mismatch(cfg, llm):
        config = llm.config.get_text_config()
        sizes = {
            "hidden_size": config.hidden_size,
            "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
        }
        for key, value in sizes.items():
            if cfg.get(key) is not None and value != cfg[key]:
                return f"holds an LLM with {key} {value}, this run's config has llm.{key}={cfg[key]}"
        return None


@LLMS.register("hf")
class PretrainedLM(LanguageModel):
    """Any Hugging Face causal LM (`llm.path`), with its own tokenizer and chat template."""

    @staticmethod
    def build(cfg, texts, seed, cache_root):
        return load_llm(
            resolve(str(cfg.path), cache_root),
            trust_remote_code=cfg.trust_remote_code,
            chat_template=cfg.chat_template,
        )
