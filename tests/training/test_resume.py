"""Mid-stage resume: `kill -9` during finetune, rerun the same command, end bit-exact with an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmcompress.training import resume
from tests.conftest import cli
from tests.test_safety import unsafe_tensor_files

ARGS = [
    "train",
    "debug=fast",
    "logger=none",
    "stage.finetune.steps=40",
    "stage.finetune.batch_size=16",
    "train.checkpoint_every=6",
]


def _run_dir(runs: Path) -> Path:
    (summary,) = runs.glob("default/*/summary.json")
    return summary.parent


def _losses(run: Path) -> list[tuple]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["stage"], r["step"], r["loss"], r["lr"]) for r in records if "loss" in r]


@pytest.mark.slow
def test_kill_9_mid_stage_then_rerun_ends_bit_exact(cache_dir, tmp_path):
    whole = tmp_path / "whole"
    cli(*ARGS, f"paths.runs={whole}")

    killed = tmp_path / "killed"
    exe = Path(sys.executable).with_name("mmcompress")
    process = subprocess.Popen(
        [str(exe), *ARGS, f"paths.runs={killed}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:  # kill once finetune has a checkpoint
        saves = list(killed.glob("default/*/checkpoints/finetune.resume/step-*"))
        if saves:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before it could be killed mid-stage"
    process.send_signal(signal.SIGKILL)
    process.wait()
    run = _run_dir(killed)
    assert not (run / "checkpoints" / "finetune" / "stage.json").exists()
    cut = json.loads((run / "summary.json").read_text())
    assert cut["status"] == "running"  # nothing had the chance to record the kill
    assert not unsafe_tensor_files(run / "checkpoints" / "finetune.resume")  # safetensors and JSON only

    result = cli(*ARGS, f"paths.runs={killed}")
    assert "finetune resumes after step" in result.stderr
    assert "stage prealign is complete; skipped" in result.stderr
    reference = _run_dir(whole)
    for part in ("modules.safetensors", "llm/model.safetensors"):
        assert (run / "checkpoints/finetune" / part).read_bytes() == (
            reference / "checkpoints/finetune" / part
        ).read_bytes(), part
    mine, theirs = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
    assert mine["scores"]["synthvqa"] == theirs["scores"]["synthvqa"]
    assert mine["val_scores"] == theirs["val_scores"]
    assert mine["stages"]["finetune"]["final_loss"] == theirs["stages"]["finetune"]["final_loss"]
    assert _losses(run) == _losses(reference)  # the log reads as if the run had never stopped
    assert not (run / "checkpoints" / "finetune.resume").exists()  # removed once the stage completes


def test_trainer_state_round_trips_through_safetensors(tmp_path):
    """Weights, AdamW moments, scheduler, step, logging window and every RNG come back exactly."""
    import random

    import numpy as np

    def setup():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        model[0].requires_grad_(False)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (s + 1))
        return model, optimizer, schedule

    model, optimizer, schedule = setup()
    for _ in range(3):
        model(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
        schedule.step()
    trainable = {"1.weight", "1.bias"}
    resume.save(tmp_path, model, optimizer, schedule, resume.Resumed(step=3, window=[0.5, 0.25]), trainable)
    expected = (torch.rand(3), np.random.rand(), random.random())
    after = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(123), np.random.seed(5), random.seed(7)
    fresh, fresh_optimizer, fresh_schedule = setup()
    state = resume.load(tmp_path, fresh, fresh_optimizer, fresh_schedule, trainable)
    assert (state.step, state.window) == (3, [0.5, 0.25])
    assert all(torch.equal(fresh.state_dict()[k], after[k]) for k in after)
    assert fresh_schedule.last_epoch == schedule.last_epoch
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    moments = optimizer.state[model[1].weight]["exp_avg_sq"]
    assert torch.equal(fresh_optimizer.state[fresh[1].weight]["exp_avg_sq"], moments)
    drawn = (torch.rand(3), np.random.rand(), random.random())  # the RNGs continue where they were saved
    assert torch.equal(drawn[0], expected[0]) and drawn[1:] == expected[1:]


def test_only_complete_checkpoints_are_resumed_and_older_ones_go(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for step in (5, 10):
        resume.save(tmp_path, model, optimizer, schedule, resume.Resumed(step=step), {"weight", "bias"})
    (tmp_path / ".tmp-step-00000015").mkdir()  # a write the kill cut short
    assert [p.name for p in tmp_path.glob("step-*")] == ["step-00000010"]
    assert resume.latest(tmp_path).name == "step-00000010"
    state = resume.load(tmp_path, model, optimizer, schedule, {"weight", "bias"})
    assert state.step == 10


def test_a_checkpoint_of_other_parameters_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    resume.save(tmp_path, model, optimizer, schedule, resume.Resumed(step=1), {"weight", "bias"})
    from mmcompress.errors import UserError

    with pytest.raises(UserError, match=r"delete .* to restart the stage"):
        resume.load(tmp_path, model, optimizer, schedule, {"weight"})


def test_rewind_drops_records_after_the_checkpoint_and_a_cut_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [("align", 9), ("finetune", 5), ("finetune", 6), ("finetune", 7)]
    metrics.write_text(
        "".join(json.dumps({"stage": s, "step": n}) + "\n" for s, n in records) + '{"stage": "fin'
    )
    resume.rewind_metrics(metrics, "finetune", 6)
    kept = [(r["stage"], r["step"]) for r in map(json.loads, metrics.read_text().splitlines())]
    assert kept == [("align", 9), ("finetune", 5), ("finetune", 6)]


def test_tied_weights_are_saved_once_and_restored(tmp_path):
    """A tied embedding is also the LM head in a state dict; it is stored once (safetensors refuses shared
    memory) and restoring it restores both."""
    model = torch.nn.Module()
    model.embed, model.head = torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False)
    model.head.weight = model.embed.weight
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    trainable = {name for name, _ in model.named_parameters()}
    assert trainable == {"embed.weight"}
    resume.save(tmp_path, model, optimizer, schedule, resume.Resumed(step=2), trainable)
    saved = model.embed.weight.detach().clone()
    with torch.no_grad():
        model.embed.weight.zero_()
    resume.load(tmp_path, model, optimizer, schedule, trainable)
    assert torch.equal(model.head.weight, saved) and model.head.weight is model.embed.weight


def test_a_run_is_trained_by_one_process_at_a_time(tmp_path):
    from mmcompress.errors import UserError
    from mmcompress.rundir import RunDir

    run = RunDir(tmp_path)
    with run.lock(), pytest.raises(UserError, match="another mmcompress process is training"), run.lock():
        pass
    with run.lock():  # released when the first holder ends
        pass
