"""The Typer application every command registers on, and what commands share: override arguments,
config directories and config composition."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="mmcompress",
    help="Compose vision experts, fusion and visual-token pruning for multimodal LLMs; train, evaluate, sweep, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Hydra overrides, e.g. encoder=clip llm=tiny stage.finetune.lr=1e-3 debug=fast",
        show_default=False,
    ),
]
ConfigDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--config-dir", help="Extra config directory searched before the packaged conf/ (repeatable)."
    ),
]


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """--debug is read by main() before Typer runs too, so errors raised while parsing are covered."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars only
    if not debug:  # our own messages only: the libraries' warnings and deprecation notices with --debug
        hf_logging.set_verbosity_error()
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def compose(overrides: list[str] | None, config_dirs: list[Path] | None):
    from mmcompress.config import extra_config_dirs, load_config

    return load_config(overrides or [], extra_config_dirs(config_dirs or []))
