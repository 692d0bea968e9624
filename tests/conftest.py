"""Shared fixtures: offline, W&B disabled, a per-session cache, and the real config tree composed tiny."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache (generated worlds, mini experts) for the whole session, never the user's own."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["MMCOMPRESS_CACHE"] = str(path)
    return path


@pytest.fixture
def compose(cache_dir, tmp_path):
    """Compose the real config tree with debug=fast and runs under tmp_path, plus any overrides."""
    from mmcompress.config import load_config

    def _compose(*overrides: str):
        return load_config(["debug=fast", "logger=none", f"paths.runs={tmp_path / 'runs'}", *overrides])

    return _compose


def cli(
    *args: str, env: dict | None = None, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run the installed `mmcompress` console script as a user would."""
    full_env = {**os.environ, **(env or {})}
    exe = Path(sys.executable).with_name("mmcompress")
    result = subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"mmcompress {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="session")
def fast_run(cache_dir, tmp_path_factory) -> Path:
    """One debug=fast run of every stage, shared by the tests that inspect a finished run directory."""
    runs = tmp_path_factory.mktemp("runs")
    result = cli("train", "debug=fast", "logger=none", f"paths.runs={runs}")
    return Path(result.stdout.strip().splitlines()[-1])


def tiny_llama(tokenizer, *, hidden: int = 32, layers: int = 2, heads: int = 4):
    """A randomly initialised Llama sized for unit tests, matching `tokenizer`'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)
