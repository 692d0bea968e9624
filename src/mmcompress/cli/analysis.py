"""Commands that analyse many runs: sweep, report and ac."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmcompress.cli.app import ConfigDirs, Overrides, app
from mmcompress.console import console
from mmcompress.errors import UserError


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
    allow_mixed_versions: Annotated[
        bool,
        typer.Option("--allow-mixed-versions", help="Compare runs made by different code versions."),
    ] = False,
) -> None:
    """Tables and plots from run directories: report.md, report.html, runs.csv and PNG plots.

    Seeds of one configuration are aggregated (mean ± std, n); failed and unfinished runs are listed, never
    dropped; the best configuration is selected on val and reported on test, and called best only when it
    beats the next by more than 2 standard errors with ≥ 3 seeds each (else: a tie). Runs of different
    code versions are refused unless --allow-mixed-versions. Needs no network.
    """
    from mmcompress.analysis.report.output import log_to_wandb, write
    from mmcompress.analysis.report.table import Report

    paths = paths or [Path("runs")]
    built = Report.build(paths, allow_mixed_versions)
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
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", help="Seeds per candidate, e.g. 0,1,2: A, C and score are their means."),
    ] = None,
) -> None:
    """Rank vision representations by their AC score without finetuning them all (Law of Vision Representation).

    Candidates are sweep overrides (encoder=clip,convnext,sam encoder.experts.convnext.stage=2,3 …), or
    the union of the sweeps listed in --candidates, each on top of the overrides given here.
    Each gets its stages up to align (in the run directory its full training would use); A aligns its
    projected tokens with the reference's, C transfers keypoints between image pairs on its features.
    Scores of candidates already trained are read; linear and quadratic fits in (A, C) are compared by
    leave-one-out R², the better one predicts the rest. With --seeds, each candidate is one run per seed.
    """
    from mmcompress.analysis.ac.output import print_result
    from mmcompress.analysis.ac.run import run_ac
    from mmcompress.config import extra_config_dirs

    if images < 1 or pairs < 1 or window < 1 or window % 2 == 0:
        raise UserError("--images and --pairs must be positive and --window a positive odd number")
    try:
        seed_list = sorted({int(s) for s in seeds.split(",")}) if seeds else None
    except ValueError:
        raise UserError(f"--seeds {seeds!r}: give integers separated by commas, e.g. --seeds 0,1,2") from None
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
        seeds=seed_list,
        extra_dirs=extra_config_dirs(config_dir or []),
    )
    print_result(result)
    typer.echo(result["out"])
