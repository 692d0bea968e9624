"""Commands that train, evaluate and use one run: train, eval, predict, config and pretrain-expert."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmcompress.cli.app import ConfigDirs, Overrides, app, compose
from mmcompress.console import console
from mmcompress.errors import UserError


@app.command()
def train(overrides: Overrides = None, config_dir: ConfigDirs = None) -> None:
    """Run the configured stages (prealign → align → finetune → eval), skipping completed ones."""
    cfg = compose(overrides, config_dir)  # config typos fail before torch is imported
    from mmcompress.training import distributed
    from mmcompress.training.run import train as run_training

    if cfg.distributed.nproc > 1 and not distributed.launched_by_torchrun():
        distributed.check(cfg)
        command = distributed.relaunch_command(cfg.distributed.nproc, sys.argv[1:])
        console.print(f"[bold]launching[/] {' '.join(command)}", highlight=False)
        threads = str(max(1, (os.cpu_count() or 1) // cfg.distributed.nproc))  # cores split between them
        # become torchrun, so Ctrl-C and kill reach it (and its workers) directly
        os.execve(command[0], command, {"OMP_NUM_THREADS": threads, **os.environ})
    run = run_training(cfg, overrides or [])
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        console.print(f"[green]done[/]: {run.path}")
        typer.echo(str(run.path))


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mmcompress train`.")],
    overrides: Overrides = None,
) -> None:
    """Score a finished run's model on benchmarks: eval.benchmarks=[pope,textvqa] benchmark.pope.questions=...

    Writes eval/<benchmark>.jsonl, the scores into summary.json and eval/lmms_eval_results.json.
    """
    from mmcompress.evaluation.stage import evaluate_run_dir

    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    evaluate_run_dir(run_dir, overrides or [])


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mmcompress train`.")],
    overrides: Overrides = None,
    image: Annotated[Path | None, typer.Option("--image", help="An image file.")] = None,
    question: Annotated[
        str | None, typer.Option("--question", "-q", help="A question about --image.")
    ] = None,
    questions: Annotated[
        Path | None,
        typer.Option(
            "--questions", help="A LLaVA question .jsonl ({question_id, image, text}) to answer in batch."
        ),
    ] = None,
    image_folder: Annotated[
        Path | None,
        typer.Option("--image-folder", help="Where --questions' image paths start (default: its folder)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Answers .jsonl (default: <run>/predict/<questions>.jsonl)."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")] = 32,
) -> None:
    """Answer a question about an image (or a question file) with a trained run's model.

    Same preprocessing, chat template and greedy generation as `mmcompress eval`.
    """
    from mmcompress.evaluation.predict import predict_file, predict_one

    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if (questions is None) == (image is None or question is None):
        raise UserError("give either --image and --question, or --questions FILE.jsonl")
    if questions is None:
        typer.echo(predict_one(run_dir, overrides or [], image, question, max_new_tokens))
        return
    written = predict_file(run_dir, overrides or [], questions, image_folder, out, max_new_tokens)
    console.print(f"answers written to {written}")
    typer.echo(str(written))


@app.command()
def config(
    overrides: Overrides = None,
    config_dir: ConfigDirs = None,
    groups: Annotated[
        bool, typer.Option("--groups", help="List the options of every config group instead.")
    ] = False,
) -> None:
    """Print the composed config (or, with --groups, every config group and its options)."""
    from mmcompress.config import extra_config_dirs, group_options, to_yaml

    if groups:
        from rich.table import Table

        table = Table("group", "options (default in bold)")
        defaults = compose([], config_dir).choices
        for group, options in group_options(extra_config_dirs(config_dir or [])).items():
            table.add_row(
                group, ", ".join(f"[bold]{o}[/]" if o == defaults.get(group) else o for o in options)
            )
        console.print(table)
        return
    typer.echo(to_yaml(compose(overrides, config_dir)), nl=False)


@app.command("pretrain-expert")
def pretrain_expert(
    expert: Annotated[
        str, typer.Argument(help="Name of an expert of the chosen encoder config, e.g. clip.")
    ] = "clip",
    overrides: Overrides = None,
    config_dir: ConfigDirs = None,
    force: Annotated[
        bool, typer.Option("--force", help="Pretrain again even if this recipe is cached or shipped.")
    ] = False,
    ship: Annotated[
        bool, typer.Option("--ship", help="Copy the result into the package (refreshes the shipped default).")
    ] = False,
) -> None:
    """Pretrain a mini expert in the synthetic world (cached per recipe; `train` does this on first use)."""
    from mmcompress.training.mini_experts.cache import ensure_mini_expert
    from mmcompress.training.mini_experts.cache import ship as ship_expert

    overrides = list(overrides or [])
    if not any(o.startswith("encoder=") for o in overrides):  # `pretrain-expert sam`: encoder=sam
        overrides.insert(0, f"encoder={expert}")
    cfg = compose(overrides, config_dir)
    experts = cfg.encoder.experts
    if expert not in experts:
        raise UserError(
            f"no expert '{expert}' in encoder={cfg.choices.encoder}; its experts: {', '.join(experts)}"
        )
    if experts[expert].get("mini") is None:
        raise UserError(
            f"expert '{expert}' of encoder={cfg.choices.encoder} is a real checkpoint, not a mini expert"
        )
    path = ensure_mini_expert(experts[expert], cfg, rebuild=force)
    typer.echo(str(ship_expert(path) if ship else path))
