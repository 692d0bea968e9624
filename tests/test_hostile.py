"""Hostile input (issue 8): every bad input ends `mmcompress` with ONE `error:` line naming the bad value and
the fix, a non-zero exit status and no traceback, and leaves every existing run byte-for-byte as it was.

Each case is a row of CASES: the command line (placeholders: {run} the finished `fast_run`, {tmp} the case's
own folder, and whatever its setup returns), a setup that builds the bad input, and the substrings the
error line must hold. The cases are independent subprocesses of the real console script, so they run
a few at a time; `fast_run` is checksummed (sha256 of every file) before any runs and after all of them, and
a case that works on a copy of it ({copy}) checks that the copy's files are unchanged too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import cli

pytestmark = pytest.mark.slow  # needs fast_run, which trains
WORKERS = min(4, os.cpu_count() or 1)  # each case is mostly a subprocess importing torch and transformers
FAST = ("debug=fast", "logger=none", "paths.runs={tmp}/runs")  # a training command writing under {tmp}
FIX_RUN = "start a new run"  # the fix every checkpoint-of-another-model error gives


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]  # substrings of the error line (formatted with the placeholders)
    setup: Callable[[Path, Path], dict[str, str]] | None = None  # (tmp, fast_run) → more placeholders
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[subprocess.CompletedProcess, dict[str, str]], None] | None = None  # more assertions


# ---- setups ----------------------------------------------------------------------------------------------------
def copy_run(tmp: Path, run: Path) -> Path:
    shutil.copytree(run, tmp / "copy")
    return tmp / "copy"


def png(path: Path, colour: str = "red") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path)
    return path


def truncated(path: Path) -> Path:
    """`path` cut to its first half, as an interrupted download or copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupt_image(tmp: Path, _run: Path) -> dict[str, str]:
    (tmp / "random.png").write_bytes(os.urandom(4096))
    return {"image": str(tmp / "random.png")}


def truncated_png(tmp: Path, _run: Path) -> dict[str, str]:
    return {"image": str(truncated(png(tmp / "half.png")))}


def bad_questions_file(tmp: Path, _run: Path) -> dict[str, str]:
    png(tmp / "a.png")
    line = json.dumps({"question_id": 0, "image": "a.png", "text": "what colour?"})
    (tmp / "q.jsonl").write_text(f"{line}\n{line[: len(line) // 2]}\n")  # the second line cut short
    return {}


def llava_dataset(tmp: Path, _run: Path) -> dict[str, str]:
    """A valid LLaVA-format dataset: four images, the same four questions in every split."""
    root = tmp / "data"
    samples = []
    for i, colour in enumerate(("red", "green", "blue", "red")):
        png(root / "images" / f"{i}.png", colour)
        turns = [{"from": "human", "value": "<image>\nwhat colour?"}, {"from": "gpt", "value": colour}]
        samples.append({"id": str(i), "image": f"images/{i}.png", "conversations": turns})
    for split in ("train", "val", "test"):
        (root / f"{split}.json").write_text(json.dumps(samples))
    return {"data": str(root)}


def llava_corrupt_image(tmp: Path, run: Path) -> dict[str, str]:
    values = llava_dataset(tmp, run)
    (Path(values["data"]) / "images" / "3.png").write_bytes(os.urandom(4096))
    return values


def llava_empty(tmp: Path, run: Path) -> dict[str, str]:
    values = llava_dataset(tmp, run)
    (Path(values["data"]) / "train.json").write_text("[]")
    return values


def llava_truncated_json(tmp: Path, run: Path) -> dict[str, str]:
    values = llava_dataset(tmp, run)
    truncated(Path(values["data"]) / "train.json")
    return values


def no_checkpoints(tmp: Path, run: Path) -> dict[str, str]:
    copy = copy_run(tmp, run)
    shutil.rmtree(copy / "checkpoints")
    return {"copy": str(copy)}


def other_width_modules(tmp: Path, run: Path) -> dict[str, str]:
    """The finetune modules of a run whose LLM is 64 wide: every projector maps the features to 64."""
    from safetensors.torch import load_file, save_file

    from mmcompress.model.projector import PROJECTORS

    copy = copy_run(tmp, run)
    target = copy / "checkpoints" / "finetune" / "modules.safetensors"
    channels = load_file(target)["projector.0.weight"].shape[1]  # (width, C)
    projector = PROJECTORS["mlp"](channels, 64, 2).state_dict()
    other = {
        f"{p}.{k}": v.clone() for p in ("projector", "prealign_projectors.clip") for k, v in projector.items()
    }
    save_file(other, target)
    return {"copy": str(copy), "file": str(target), "channels": str(channels)}


def other_width_llm(tmp: Path, run: Path) -> dict[str, str]:
    """The finetune LLM of a run with llm.hidden_size=64 (its tokenizer files kept)."""
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    copy = copy_run(tmp, run)
    llm = copy / "checkpoints" / "finetune" / "llm"
    config = AutoConfig.from_pretrained(llm).to_dict()
    config |= {"hidden_size": 64, "intermediate_size": 128, "head_dim": 64 // config["num_attention_heads"]}
    LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(llm)
    return {"copy": str(copy), "file": str(llm)}


def truncated_llm_weights(tmp: Path, run: Path) -> dict[str, str]:
    copy = copy_run(tmp, run)
    truncated(copy / "checkpoints" / "finetune" / "llm" / "model.safetensors")
    return {"copy": str(copy), "file": str(copy / "checkpoints" / "finetune" / "llm")}


def a_file(tmp: Path, _run: Path) -> dict[str, str]:
    (tmp / "file").write_text("a regular file, not a directory\n")
    return {}


def read_only_parent(tmp: Path, _run: Path) -> dict[str, str]:
    """A run directory that cannot be created: under a 0o555 folder, or, for root (whom permissions do
    not stop), where a regular file already stands."""
    parent = tmp / "read-only"
    parent.mkdir()
    if os.geteuid() == 0:
        (parent / "run").write_text("a regular file where the run directory should be\n")
        return {"reason": "File exists"}
    parent.chmod(0o555)
    return {"reason": "Permission denied"}


def full_disk(tmp: Path, _run: Path) -> dict[str, str]:
    """A run whose metrics.jsonl is /dev/full: every write to it fails with ENOSPC, as on a full disk."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full to simulate a full disk")
    (tmp / "run").mkdir()
    (tmp / "run" / "metrics.jsonl").symlink_to("/dev/full")
    return {}


def site(code: str) -> Callable[[Path, Path], dict[str, str]]:
    """A setup writing `code` as sitecustomize.py, which the subprocess imports at start ({site} on PYTHONPATH)."""

    def setup(tmp: Path, _run: Path) -> dict[str, str]:
        (tmp / "site").mkdir()
        (tmp / "site" / "sitecustomize.py").write_text(code)
        return {"site": str(tmp / "site")}

    return setup


WANDB_OUTAGE = """
import wandb.sdk.wandb_run as wandb_run

_log, _calls = wandb_run.Run.log, []


def log(self, *args, **kwargs):  # W&B goes down at the fifth logged step (align step 2 of debug=fast)
    _calls.append(1)
    if len(_calls) >= 5:
        raise ConnectionError("simulated W&B outage")
    return _log(self, *args, **kwargs)


wandb_run.Run.log = log
"""
WANDB_INIT_FAILS = """
import wandb
import wandb.errors


def init(*args, **kwargs):
    raise wandb.errors.CommError("simulated: api.wandb.ai is unreachable")


wandb.init = init
"""


def logged_steps(run: Path) -> list[tuple[str, int]]:
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(m["stage"], m["step"]) for m in metrics if "loss" in m]


def wandb_outage_lost_nothing(result: subprocess.CompletedProcess, values: dict[str, str]) -> None:
    run = Path(result.stdout.strip().splitlines()[-1])  # `train` prints the run directory last
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: W&B")]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert logged_steps(run) == logged_steps(Path(values["run"]))  # every step, as in the run without W&B
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["scores"]["synthvqa"]["n"] > 0


CASES = [
    # ---- overrides and config values
    Case(
        "override-unbalanced",
        ("config", "stage.finetune.lr=[1e-3"),
        ("'stage.finetune.lr=[1e-3'", "key=value"),
    ),
    Case(
        "unknown-key", ("train", *FAST, "stage.finetune.lrr=1"), ("stage.finetune.lrr", "mmcompress config")
    ),
    Case("unknown-encoder", ("config", "encoder=nosuch"), ("encoder 'nosuch'", "valid options: clip")),
    Case("unknown-pruning", ("config", "pruning=nosuch"), ("pruning 'nosuch'", "valid options:")),
    Case("steps-not-a-number", ("train", *FAST, "stage.finetune.steps=abc"), ("steps='abc'", "positive int")),
    Case("negative-lr", ("train", *FAST, "stage.finetune.lr=-1"), ("stage.finetune.lr=-1", "positive float")),
    Case("seed-not-a-number", ("train", *FAST, "seed=x"), ("seed='x'", "integer")),
    Case(
        "ac-seeds-not-numbers",
        ("ac", *FAST, "encoder=clip,sam", "--seeds", "0,abc"),
        ("--seeds '0,abc'", "0,1,2"),
    ),
    Case(  # rich markup in a value is printed as it is, never interpreted (a MarkupError was a traceback)
        "missing-config-dir-with-markup",
        ("config", "--config-dir", "{tmp}/[/bold]x[red]"),
        ("{tmp}/[/bold]x[red]", "fix --config-dir"),
    ),
    Case(
        "missing-image",
        ("predict", "{run}", "--image", "{tmp}/nosuch.png", "--question", "what colour?"),
        ("{tmp}/nosuch.png", "does not exist"),
    ),
    Case(
        "corrupt-image",
        ("predict", "{run}", "--image", "{image}", "--question", "what colour?"),
        ("{image}", "replace or remove it"),
        corrupt_image,
    ),
    Case(
        "truncated-png",
        ("predict", "{run}", "--image", "{image}", "--question", "what colour?"),
        ("{image}", "truncated", "replace or remove it"),
        truncated_png,
    ),
    Case(
        "malformed-questions-jsonl",
        ("predict", "{run}", "--questions", "{tmp}/q.jsonl"),
        ("{tmp}/q.jsonl", "line 2", "--questions must point at"),
        bad_questions_file,
    ),
    Case(
        "dataset-corrupt-image",
        ("train", *FAST, "data=llava", "data.path={data}"),
        ("{data}/images/3.png", "replace or remove it"),
        llava_corrupt_image,
    ),
    Case(  # the experts run on every batch: decoded by two worker processes, the error still one line
        "dataset-corrupt-image-in-a-worker",
        ("train", *FAST, "data=llava", "data.path={data}", "train.cache_features=off", "train.num_workers=2"),
        ("{data}/images/3.png", "replace or remove it"),
        llava_corrupt_image,
    ),
    Case(
        "dataset-empty",
        ("train", *FAST, "data=llava", "data.path={data}"),
        ("{data}/train.json holds no samples", "non-empty dataset"),
        llava_empty,
    ),
    Case(
        "dataset-truncated-json",
        ("train", *FAST, "data=llava", "data.path={data}"),
        ("{data}/train.json is not valid JSON", "fix or regenerate it"),
        llava_truncated_json,
    ),
    # ---- checkpoints: missing, damaged, of another architecture
    Case(
        "eval-without-checkpoints",
        ("eval", "{copy}"),
        ("{copy} has no checkpoints/init", "run `mmcompress train`"),
        no_checkpoints,
    ),
    Case(
        "init-from-missing",
        ("train", *FAST, "init_from=/nonexistent/run", "stages=[eval]"),
        ("init_from=/nonexistent/run", "give the directory of a finished run"),
    ),
    Case(
        "init-from-other-architecture",
        ("train", *FAST, "init_from={run}", "stages=[eval]", "llm.hidden_size=64"),
        ("init_from={run}", "`llm`", "overrides.txt"),
    ),
    Case(
        "modules-of-another-architecture",
        ("eval", "{copy}"),
        ("{file}", "projector.0.weight is 64×{channels} there but 128×{channels} in this model", FIX_RUN),
        other_width_modules,
    ),
    Case(
        "llm-of-another-architecture",
        ("eval", "{copy}"),
        ("{file}", "hidden_size 64", "llm.hidden_size=128", FIX_RUN),
        other_width_llm,
    ),
    Case(
        "truncated-llm-weights",
        ("eval", "{copy}"),
        ("{file} cannot be loaded", FIX_RUN),
        truncated_llm_weights,
    ),
    # ---- where the run writes: an unwritable run directory, a full disk
    Case(
        "run-dir-under-a-file",
        ("train", *FAST, "run_dir={tmp}/file/run"),
        ("{tmp}/file/run", "run_dir=..."),
        a_file,
    ),
    Case(
        "run-dir-not-writable",
        ("train", *FAST, "run_dir={tmp}/read-only/run"),
        ("{tmp}/read-only/run", "{reason}", "run_dir=..."),
        read_only_parent,
    ),
    Case(
        "full-disk",
        ("train", "debug=fast", "logger=none", "run_dir={tmp}/run"),
        ("no space left on device writing {tmp}/run/metrics.jsonl", "free space", "rerun the same command"),
        full_disk,
    ),
    # ---- W&B: a bad mode, failing to start, failing mid-run
    Case(
        "wandb-bad-mode",
        ("train", "debug=fast", "logger=wandb", "logger.mode=bogus", "paths.runs={tmp}/runs"),
        ("logger.mode=bogus", "logger=none"),
        env={"WANDB_MODE": ""},
    ),
    Case(
        "wandb-init-fails",
        ("train", "debug=fast", "logger=wandb", "paths.runs={tmp}/runs"),
        ("W&B could not start", "simulated: api.wandb.ai is unreachable", "logger=none"),
        site(WANDB_INIT_FAILS),
        env={"WANDB_MODE": "offline", "PYTHONPATH": "{site}"},
    ),
    Case(
        "wandb-fails-mid-run",
        ("train", "debug=fast", "logger=wandb", "paths.runs={tmp}/runs"),
        ("W&B logging failed at align step 2", "simulated W&B outage", "metrics.jsonl", "logger=none"),
        site(WANDB_OUTAGE),
        env={"WANDB_MODE": "offline", "PYTHONPATH": "{site}"},
        check=wandb_outage_lost_nothing,
    ),
]


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@dataclass
class Outcome:
    values: dict[str, str]
    result: subprocess.CompletedProcess | None = None
    copy_before: dict[str, str] | None = None
    copy_after: dict[str, str] | None = None
    seconds: float = 0.0
    error: BaseException | None = None  # a setup that failed (or skipped): re-raised by the case's test


@pytest.fixture(scope="module")
def outcomes(
    fast_run, cache_dir, tmp_path_factory
) -> tuple[dict[str, Outcome], dict[str, str], dict[str, str]]:
    """Every case run once, a few at a time: outcomes by id, and fast_run's checksums before and after."""
    before = checksums(fast_run)
    prepared: dict[str, Outcome] = {}
    for case in CASES:  # setups are quick and run here, one by one
        tmp = tmp_path_factory.mktemp(case.id).resolve()
        outcome = prepared[case.id] = Outcome({"run": str(fast_run), "tmp": str(tmp)})
        try:
            outcome.values |= case.setup(tmp, fast_run) if case.setup else {}
        except BaseException as exc:  # pytest.skip included
            outcome.error = exc
        if "copy" in outcome.values and outcome.error is None:
            outcome.copy_before = checksums(Path(outcome.values["copy"]))

    def run(case: Case) -> None:
        outcome = prepared[case.id]
        if outcome.error is None:
            argv = [arg.format(**outcome.values) for arg in case.argv]
            env = {k: v.format(**outcome.values) for k, v in case.env.items()}
            start = time.monotonic()
            outcome.result = cli(*argv, env=env, check=False, timeout=600)
            outcome.seconds = time.monotonic() - start
            if outcome.copy_before is not None:
                outcome.copy_after = checksums(Path(outcome.values["copy"]))

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(run, CASES))
    return prepared, before, checksums(fast_run)


def test_enough_hostile_inputs():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, outcomes):
    prepared, run_before, run_after = outcomes
    outcome = prepared[case.id]
    if outcome.error is not None:
        raise outcome.error
    result = outcome.result
    stderr = re.sub(r"\x1b\[[0-9;]*m", "", result.stderr)
    shown = f"exit {result.returncode} after {outcome.seconds:.1f} s, stderr:\n{stderr[-3000:]}"
    assert result.returncode != 0, shown
    assert "Traceback" not in stderr, shown
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, shown  # progress bars and info lines aside, the error is one line
    for expected in case.expect:
        assert expected.format(**outcome.values) in errors[0], f"{expected!r} not in {errors[0]!r}"
    assert run_after == run_before, "a finished run's files changed"
    if outcome.copy_before is not None:  # the copied run's files are all there, unchanged
        assert {k: outcome.copy_after.get(k) for k in outcome.copy_before} == outcome.copy_before
    if case.check:
        case.check(result, outcome.values)
