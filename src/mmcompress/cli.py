"""The `mmcompress` command line: Typer owns commands and --options, Hydra owns key=value overrides."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmcompress.console import console
from mmcompress.errors import UserError

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
    del debug  # read by main() before Typer runs, so errors raised while parsing are covered too
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # our own progress bars and messages only
    hf_logging.disable_progress_bar()


def _compose(overrides: list[str] | None, config_dirs: list[Path] | None):
    from mmcompress.config import extra_config_dirs, load_config

    return load_config(overrides or [], extra_config_dirs(config_dirs or []))


@app.command()
def train(overrides: Overrides = None, config_dir: ConfigDirs = None) -> None:
    """Run the configured stages (prealign → align → finetune → eval), skipping completed ones."""
    cfg = _compose(overrides, config_dir)  # config typos fail before torch is imported
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
        defaults = _compose([], config_dir).choices
        for group, options in group_options(extra_config_dirs(config_dir or [])).items():
            table.add_row(
                group, ", ".join(f"[bold]{o}[/]" if o == defaults.get(group) else o for o in options)
            )
        console.print(table)
        return
    typer.echo(to_yaml(_compose(overrides, config_dir)), nl=False)


@app.command()
def sweep(
    overrides: Overrides = None,
    config_dir: ConfigDirs = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the runs and what each would do; launch nothing.")
    ] = False,
) -> None:
    """Expand Hydra sweep overrides (a=1,2 · range() · choice() · glob()) into runs and launch them.

    Finished runs are skipped and interrupted ones resumed, since a run's directory is named by its config;
    one failing run does not stop the others. The launcher is a config group: launcher=local|parallel|slurm.
    """
    from mmcompress.analysis.sweep import launch, plan, print_plan
    from mmcompress.config import extra_config_dirs

    dirs = extra_config_dirs(config_dir or [])
    planned = plan(overrides or [], dirs)
    print_plan(planned)
    if dry_run:
        return
    done = launch(planned, dirs)
    count = {s: sum(j.status == s for j in done.jobs) for s in ("complete", "skipped", "invalid", "failed")}
    console.print(
        f"sweep {done.id}: "
        + ", ".join(f"{n} {s}" for s, n in count.items() if n or s != "invalid")
        + f" · mmcompress report {done.directory}"
    )
    typer.echo(str(done.directory))
    if count["failed"] or count["invalid"] == len(done.jobs):  # invalid combinations alone are not a failure
        raise typer.Exit(1)


@app.command()
def report(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run directories, sweep directories, or any directory holding runs (default: runs/).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: <first path>/report).")
    ] = None,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Also log the table and plots to W&B (project: --project).")
    ] = False,
    project: Annotated[str, typer.Option("--project", help="W&B project for --wandb.")] = "mmcompress",
) -> None:
    """Tables and plots from run directories: report.md, report.html, runs.csv and PNG plots.

    Seeds of one configuration are aggregated (mean ± std); failed and unfinished runs are listed, never
    dropped; the best configuration is selected on val and reported on test. Needs no network.
    """
    from mmcompress.analysis.report.output import log_to_wandb, write
    from mmcompress.analysis.report.table import Report

    paths = paths or [Path("runs")]
    built = Report.build(paths)
    built.print()
    target = out or (paths[0] if paths[0].is_dir() else paths[0].parent) / "report"
    written = write(built, target)
    if wandb:
        log_to_wandb(built, written, project)
    console.print(f"report written to {target}: " + ", ".join(p.name for p in written.values()))
    typer.echo(str(target))


@app.command()
def ac(
    overrides: Overrides = None,
    config_dir: ConfigDirs = None,
    reference: Annotated[
        list[str] | None,
        typer.Option(
            "--reference", help="Encoder config(s) the A score aligns to, averaged (default: clip)."
        ),
    ] = None,
    images: Annotated[int, typer.Option("--images", help="Val images the A score averages over.")] = 100,
    pairs: Annotated[int, typer.Option("--pairs", help="Image pairs the C score averages over.")] = 100,
    spair: Annotated[
        Path | None,
        typer.Option("--spair", help="SPair-71k folder: its test pairs instead of generated ones."),
    ] = None,
    window: Annotated[
        int, typer.Option("--window", help="Soft-argmax window of the keypoint transfer (1: none).")
    ] = 3,
    benchmark: Annotated[
        str | None,
        typer.Option("--benchmark", help="Whose score the fit predicts (default: the training data's)."),
    ] = None,
    policy: Annotated[
        bool, typer.Option("--policy", help="Say which candidates to train next (the AC policy).")
    ] = False,
    trials: Annotated[
        int, typer.Option("--trials", help="Policy simulations once every candidate is trained.")
    ] = 1000,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: runs/<name>/ac/<id>).")
    ] = None,
    candidates: Annotated[
        Path | None,
        typer.Option("--candidates", help="YAML list of override strings, each a sweep of candidates."),
    ] = None,
) -> None:
    """Rank vision representations by their AC score without finetuning them all (Law of Vision Representation).

    Candidates are sweep overrides (encoder=clip,convnext,sam encoder.experts.convnext.stage=2,3 …), or
    the union of the sweeps listed in --candidates, each on top of the overrides given here.
    Each gets its stages up to align (in the run directory its full training would use); A aligns its
    projected tokens with the reference's, C transfers keypoints between image pairs on its features.
    Scores of candidates already trained are read, a quadratic in (A, C) is fitted and the rest predicted.
    """
    from mmcompress.analysis.ac.output import print_result
    from mmcompress.analysis.ac.run import run_ac
    from mmcompress.config import extra_config_dirs

    if images < 1 or pairs < 1 or window < 1 or window % 2 == 0:
        raise UserError("--images and --pairs must be positive and --window a positive odd number")
    result = run_ac(
        overrides or [],
        reference or ["clip"],
        images=images,
        pairs=pairs,
        spair=spair,
        window=window,
        benchmark=benchmark,
        policy=policy,
        trials=trials,
        out=out,
        candidates=candidates,
        extra_dirs=extra_config_dirs(config_dir or []),
    )
    print_result(result)
    typer.echo(result["out"])


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
    cfg = _compose(overrides, config_dir)
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


def main() -> None:
    """Entry point: one-line errors with exit status, full tracebacks only with --debug.

    A full disk or an unwritable path, anywhere, is one line naming the path (errors.disk_problem); a W&B
    mirror that failed mid-run (tracking.FAILURES) makes a finished command exit non-zero."""
    from typing import NoReturn

    from rich.markup import escape

    from mmcompress.errors import disk_problem

    debug = "--debug" in sys.argv[1:3]

    def fail(message: str, status: int) -> NoReturn:
        console.quiet = False  # an error shows on every torchrun process, not only rank 0
        one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
        console.print(f"[red]error:[/] {escape(one_line)}", soft_wrap=True)
        sys.exit(status)

    try:
        status = app(standalone_mode=False)  # click returns a command's typer.Exit code instead of exiting
        tracking = sys.modules.get("mmcompress.tracking")
        if tracking is not None and tracking.FAILURES:  # the command finished without its W&B mirror
            raise UserError(tracking.FAILURES[0])
        if isinstance(status, int) and status:
            sys.exit(status)
    except UserError as exc:
        if debug:
            raise
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: completed stages are kept; rerun the same command to resume")
        sys.exit(130)
    except Exception as exc:  # Click usage errors, full disks and anything unexpected
        import click

        if isinstance(exc, click.exceptions.ClickException):
            fail(exc.format_message(), exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        if debug:
            raise
        problem = disk_problem(exc)
        if problem:
            fail(problem, 1)
        text = str(exc).strip()
        fail(
            f"{type(exc).__name__}: {text.splitlines()[0] if text else ''} (rerun with --debug for the traceback)",
            1,
        )
