"""`mmcompress sweep`: expand Hydra sweep syntax into runs, skip finished ones, launch the rest.

Every run is the same command a user would type, `mmcompress train <overrides>`, started by the launcher
the config names (`launcher=local|parallel|slurm`), so a sweep's run directories are exactly those of
single runs: a finished run is found by its id and skipped, an interrupted one resumes from its last
completed stage. The sweep itself is recorded in `<paths.runs>/<name>/sweeps/<sweep-id>/sweep.json`
(every run's overrides, run directory and outcome, failures included) next to one log per run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from rich.markup import escape

from mmcompress.config import _first_line, group_options, load_config
from mmcompress.console import console, progress
from mmcompress.errors import ConfigError, UserError
from mmcompress.rundir import RunDir, atomic_write

# What a planned run will do: skip (complete), resume (some stages done), start (nothing yet), invalid
# (its config does not compose or validate; reported as failed without being launched).
PLAN_STATES = ("complete", "resume", "start", "invalid")


@dataclass
class Job:
    index: int
    overrides: list[str]
    run_dir: str | None = None
    state: str = "start"
    status: str | None = None  # after launching: complete / failed / skipped
    error: str | None = None
    seconds: float | None = None
    log: str | None = None


@dataclass
class Sweep:
    id: str
    group: str
    directory: Path
    base: DictConfig
    jobs: list[Job] = field(default_factory=list)

    def write(self) -> None:
        record = {
            "sweep_id": self.id,
            "wandb_group": self.group,
            "launcher": self.base.launcher.name,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runs": [asdict(j) for j in self.jobs],
        }
        atomic_write(self.directory / "sweep.json", json.dumps(record, indent=2) + "\n")


def expand(overrides: list[str], extra_dirs: list[Path] = ()) -> list[list[str]]:
    """Hydra sweep syntax (`a=1,2`, `range()`, `choice()`, `glob()`) → one override list per run.

    The cartesian product, in the order the keys were given, the last key varying fastest (as Hydra's
    basic sweeper orders it).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob
    from hydra.errors import HydraException, OverrideParseException

    from mmcompress.config import refuse_secret_overrides

    refuse_secret_overrides(overrides)  # before a parse error could echo a credential
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(f"malformed override: {_first_line(exc)}; overrides look like key=value") from None
    axes: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif isinstance(override.value(), Glob):
            options = group_options(extra_dirs).get(override.key_or_group)
            if options is None:
                raise ConfigError(f"'{override.input_line}': glob() selects options of a config group")
            axes[key] = [f"{key}={name}" for name in override.value().filter(options)]
        elif override.is_discrete_sweep():
            try:
                axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            except HydraException as exc:
                raise ConfigError(f"'{override.input_line}': {_first_line(exc)}") from None
        else:
            raise ConfigError(
                f"'{override.input_line}' is an interval sweep, which needs an optimiser; "
                "give a list (a=1,2), range() or choice()"
            )
        if not axes[key]:
            raise ConfigError(f"'{override.input_line}' expands to no value")
    return [list(run) for run in itertools.product(*axes.values())]


def plan(overrides: list[str], extra_dirs: list[Path] = ()) -> Sweep:
    """Expand the sweep and find, for every run, its run directory and what launching it would do."""
    from mmcompress.training.checks import validate
    from mmcompress.training.run import run_directory
    from mmcompress.training.stages import TRAINING_STAGES

    runs = expand(overrides, extra_dirs)
    base = load_config(runs[0], extra_dirs)
    digest = hashlib.sha1(json.dumps(runs).encode()).hexdigest()[:8]
    directory = Path(base.paths.runs).expanduser() / base.name / "sweeps" / digest
    sweep = Sweep(digest, f"{base.name}-sweep-{digest}", directory, base)
    for index, run_overrides in enumerate(runs):
        job = Job(index, run_overrides)
        try:
            cfg = load_config(run_overrides, extra_dirs)
            validate(cfg)
        except UserError as exc:
            job.state, job.error = "invalid", str(exc)
        else:
            run = run_directory(cfg)
            job.run_dir = str(run.path)
            wanted = [s for s in TRAINING_STAGES if s in cfg.stages]
            done = [s for s in wanted if run.stage_complete(s)]
            scored = set(run.summary().get("scores", {}))
            evaluated = (
                "eval" not in cfg.stages or set(cfg.eval.benchmarks) <= scored
            )  # a new benchmark reruns eval
            if len(done) == len(wanted) and evaluated and run.summary().get("status") == "complete":
                job.state = "complete"
            elif done:
                job.state = "resume"
        sweep.jobs.append(job)
    return sweep


def launch(sweep: Sweep, extra_dirs: list[Path] = ()) -> Sweep:
    """Run every job not complete yet with the configured launcher; a failing run never stops the others."""
    sweep.directory.mkdir(parents=True, exist_ok=True)
    for job in sweep.jobs:
        if job.state == "complete":
            job.status = "skipped"
        elif job.state == "invalid":
            job.status = "invalid"  # a combination the design space rules out (e.g. xattn with one expert)
    todo = [j for j in sweep.jobs if j.status is None]
    for job in todo:
        job.log = str(sweep.directory / "logs" / f"{job.index:03d}.log")
    sweep.write()
    launcher = LAUNCHERS.get(sweep.base.launcher.name)
    if launcher is None:
        raise ConfigError(f"unknown launcher {sweep.base.launcher.name!r}; use one of {', '.join(LAUNCHERS)}")
    commands = {j.index: _command(sweep, j, extra_dirs) for j in todo}
    with progress() as bar:
        task = bar.add_task("sweep", total=len(todo), info=f"{len(sweep.jobs) - len(todo)} already done")
        for job, returncode, seconds in launcher(sweep.base.launcher, todo, commands):
            job.seconds = round(seconds, 1)
            job.status = "complete" if returncode == 0 else "failed"
            if returncode != 0:
                job.error = _error_line(job)
            sweep.write()
            bar.update(task, advance=1, info=f"run {job.index} {job.status}")
            mark = "[green]complete[/]" if returncode == 0 else f"[red]failed[/]: {escape(job.error)}"
            shown = escape(" ".join(job.overrides) or "defaults")  # stages=[eval] is not rich markup
            console.print(f"run {job.index} ({shown}): {mark}", soft_wrap=True)
    return sweep


def _command(sweep: Sweep, job: Job, extra_dirs: list[Path]) -> list[str]:
    """The `mmcompress train` command line of one run: the user's overrides plus the sweep's W&B group."""
    dirs = [arg for d in extra_dirs for arg in ("--config-dir", str(d))]
    return [
        sys.executable,
        "-m",
        "mmcompress",
        "train",
        *dirs,
        *job.overrides,
        f"++logger.group={sweep.group}",
    ]


def _error_line(job: Job) -> str:
    """The one-line error a failed run printed (its summary's error, else the last `error:` line of its log)."""
    if job.run_dir:
        error = RunDir(Path(job.run_dir)).summary().get("error")
        if error:
            return error
    lines = (
        Path(job.log).read_text(errors="replace").splitlines() if job.log and Path(job.log).is_file() else []
    )
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1].removeprefix("error:").strip()


def _run(command: list[str], log: str, threads: int | None = None) -> tuple[int, float]:
    """Run one command, its stdout and stderr into `log`; returns (exit status, seconds)."""
    env = {**os.environ, "TERM": "dumb"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as out:
        returncode = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    return returncode, time.time() - start


def _local(launcher: DictConfig, jobs: list[Job], commands: dict[int, list[str]]):
    """One run after another in this machine's processes."""
    for job in jobs:
        yield (job, *_run(commands[job.index], job.log))


def _parallel(launcher: DictConfig, jobs: list[Job], commands: dict[int, list[str]]):
    """`launcher.n_jobs` runs at a time on this machine, the CPU threads split between them."""
    n_jobs = max(1, int(launcher.n_jobs))
    threads = launcher.threads_per_job or max(1, (os.cpu_count() or 1) // n_jobs)
    with ThreadPoolExecutor(n_jobs) as pool:
        futures = {pool.submit(_run, commands[j.index], j.log, threads): j for j in jobs}
        for future in as_completed(futures):
            yield (futures[future], *future.result())


def _slurm(launcher: DictConfig, jobs: list[Job], commands: dict[int, list[str]]):
    """One SLURM job per run through submitit (`launcher.cluster=local` runs them as local processes)."""
    try:
        import submitit
    except ImportError:
        raise UserError("launcher=slurm needs submitit: pip install 'mmcompress[sweeps]'") from None
    folder = Path(jobs[0].log).parent.parent / "submitit"
    executor = submitit.AutoExecutor(folder=folder, cluster=launcher.cluster)
    parameters = {
        "timeout_min": launcher.timeout_min,
        "cpus_per_task": launcher.cpus_per_task,
        "mem_gb": launcher.mem_gb,
        "gpus_per_node": launcher.gpus_per_node,
        "name": "mmcompress",
    }
    if executor.cluster == "slurm":
        parameters |= {
            "slurm_partition": launcher.partition,
            "slurm_array_parallelism": launcher.array_parallelism,
            "slurm_additional_parameters": dict(launcher.additional_parameters or {}),
        }
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    with executor.batch():
        submitted = [(j, executor.submit(_run, commands[j.index], j.log)) for j in jobs]
    console.print(f"submitted {len(submitted)} jobs ({executor.cluster}); submitit logs in {folder}")
    pending = dict(enumerate(submitted))
    while pending:
        for key, (job, handle) in list(pending.items()):
            if handle.done():
                del pending[key]
                try:
                    yield (job, *handle.result())
                except Exception as exc:  # the cluster killed or never ran the job
                    job.error = _first_line(exc)
                    yield job, 1, 0.0
        time.sleep(launcher.poll_s)


LAUNCHERS = {"local": _local, "parallel": _parallel, "slurm": _slurm}


def print_plan(sweep: Sweep) -> None:
    """A table of the planned runs: the overrides that vary between them, run id and what will happen."""
    from rich.table import Table
    from rich.text import Text

    varying = [
        i for i in range(len(sweep.jobs[0].overrides)) if len({tuple(j.overrides)[i] for j in sweep.jobs}) > 1
    ]
    table = Table(title=f"sweep {sweep.id}: {len(sweep.jobs)} runs · launcher={sweep.base.launcher.name}")
    for column in ("#", "overrides", "run", "plan"):
        table.add_column(column)
    style = {"complete": "green", "resume": "yellow", "start": "", "invalid": "red"}
    for job in sweep.jobs:
        shown = " ".join(job.overrides[i] for i in varying) or " ".join(job.overrides) or "defaults"
        plan_text = {"complete": "skip (complete)", "resume": "resume", "start": "run"}.get(
            job.state, job.error
        )
        table.add_row(
            str(job.index),
            Text(shown),
            Path(job.run_dir).name if job.run_dir else "—",
            Text(plan_text, style=style[job.state]),
        )
    console.print(table)
