"""Rerun an experiment's smallest configuration and check its recorded figure.

Each experiment folder holds `reproduce.yaml`: its smallest configuration, either `train` (the
`mmcompress train` overrides of one seed of its cheapest arm; the figure is read from the run's
summary.json) or `script` (its analysis script's arguments, `{out}` for the folder it writes, and the JSON
file `output` it writes there), the figure recorded for it (a dotted path into that JSON), the code version
it was recorded at, and the tolerance with the reason for it. This script reruns that configuration in a
fresh folder, reads the figure and says whether it reproduces.

    python experiments/reproduce.py                    # list the experiments and their recorded figures
    python experiments/reproduce.py default-learning-bar [--out DIR] [--show]

Exit status 0: within the tolerance; 1: outside it; 2: bad input (no such experiment, a failed run).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SPEC = "reproduce.yaml"


@dataclass(frozen=True)
class Spec:
    """One experiment's smallest configuration and what it recorded."""

    experiment: str
    figure: str  # dotted path into the output JSON, e.g. scores.synthvqa.overall
    recorded: float
    tolerance: float
    why: str  # why this tolerance
    code_version: str
    minutes: float  # about how long the rerun takes on 2 CPU cores
    train: list[str] | None = None  # `mmcompress train` overrides
    script: list[str] | None = (
        None  # python arguments, run in the experiment's folder; {out}: the output folder
    )
    output: str = "summary.json"  # the JSON file the script writes under {out}

    def command(self, out: Path) -> list[str]:
        if self.train is not None:
            beside = Path(sys.executable).with_name("mmcompress")  # the environment running this script
            executable = str(beside) if beside.is_file() else "mmcompress"
            return [executable, "train", *self.train, "logger=none", f"paths.runs={out}"]
        return [sys.executable, *(arg.replace("{out}", str(out)) for arg in self.script)]

    @classmethod
    def read(cls, folder: Path) -> Spec:
        data = yaml.safe_load((folder / SPEC).read_text())
        return cls(experiment=folder.name, **data)


def specs(root: Path = HERE) -> dict[str, Spec]:
    return {folder.name: Spec.read(folder) for folder in sorted(root.iterdir()) if (folder / SPEC).is_file()}


def shown(spec: Spec) -> str:
    """The spec's command as a person would type it (OUT: the output folder)."""
    executable, *args = spec.command(Path("OUT"))
    return shlex.join([Path(executable).name, *args])


def figure_of(summary: dict, path: str) -> float:
    value = summary
    for part in path.split("."):
        value = value[part]
    return float(value)


def rerun(spec: Spec, out: Path, root: Path) -> dict:
    """Run the spec's configuration writing under `out`; the JSON it records the figure in."""
    command = spec.command(out)
    env = os.environ | {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, cwd=root / spec.experiment)
    if done.returncode != 0:
        sys.exit(f"error: `{' '.join(command)}` failed (exit {done.returncode}); see its output above")
    folder = Path(done.stdout.strip().splitlines()[-1]) if spec.train is not None else out
    return json.loads((folder / spec.output).read_text())


def verdict(spec: Spec, summary: dict) -> tuple[bool, str]:
    value = figure_of(summary, spec.figure)
    version = summary.get("env", {}).get("code_version", "not recorded by the script")
    same = (
        "the recorded code version"
        if version == spec.code_version
        else (f"code version {version}, recorded at {spec.code_version}")
    )
    ok = abs(value - spec.recorded) <= spec.tolerance
    word = "reproduced" if ok else "NOT reproduced"
    return ok, (
        f"{spec.experiment}: {word}: {spec.figure} {value:.4f} vs recorded {spec.recorded:.4f} "
        f"(tolerance {spec.tolerance}: {spec.why}; {same})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", help="an experiment folder's name; none: list them")
    parser.add_argument("--out", type=Path, help="where to run (default: a temporary folder, removed after)")
    parser.add_argument("--root", type=Path, default=HERE, help=argparse.SUPPRESS)  # tests: a fixture folder
    parser.add_argument("--show", action="store_true", help="print the command, do not run it")
    args = parser.parse_args(argv)
    known = specs(args.root)
    if args.experiment is None:
        for spec in known.values():
            print(
                f"{spec.experiment}: {spec.figure} = {spec.recorded} ± {spec.tolerance} "
                f"(~{spec.minutes:g} min): {shown(spec)}"
            )
        return 0
    if args.experiment not in known:
        print(f"error: no {SPEC} for {args.experiment!r}; choose one of: {', '.join(known)}", file=sys.stderr)
        return 2
    spec = known[args.experiment]
    if args.show:
        print(shown(spec))
        return 0
    if args.out is not None:
        summary = rerun(spec, args.out.resolve(), args.root)
    else:
        with tempfile.TemporaryDirectory(prefix="reproduce-") as out:
            summary = rerun(spec, Path(out), args.root)
    ok, line = verdict(spec, summary)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
