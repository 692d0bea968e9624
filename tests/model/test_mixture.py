"""Mixtures of experts end to end: every fusion over all four mini experts, and EAGLE's pre-alignment with
per-expert freezing and its own learning rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import cli

ALL_FOUR = "encoder=clip+convnext+sam+pix2struct"


@pytest.mark.slow
@pytest.mark.parametrize(("fusion", "tokens"), [("concat", 64), ("sequence", 4 * 64), ("xattn", 64)])
def test_four_experts_train_and_evaluate_with_each_fusion(cache_dir, tmp_path, fusion, tokens):
    result = cli("train", "debug=fast", "logger=none", f"paths.runs={tmp_path}", ALL_FOUR, f"fusion={fusion}")
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and run.name.startswith("clip+convnext+sam+pix2struct_")
    experts = summary["experts"]
    assert list(experts) == ["clip", "convnext", "sam", "pix2struct"]
    assert all(e["grid"] == [8, 8] for e in experts.values())
    assert experts["sam"]["native_grid"] == [16, 16] and experts["sam"]["channels"] == 4 * 64  # unshuffled
    assert summary["fusion"]["name"] == fusion and summary["fusion"]["visual_tokens"] == tokens
    assert summary["visual_tokens"]["mean"] == tokens
    assert "expert sam: sam from" in result.stderr and "16×16×64 → unshuffle → grid 8×8×256" in result.stderr


def test_prealign_trains_each_expert_with_its_own_projector(cache_dir, tmp_path):
    result = cli(
        "train", "debug=fast", "logger=none", f"paths.runs={tmp_path}", "encoder=clip+sam", "stages=[prealign]",
        "stage.prealign.trainable=[projector,encoder]", "stage.prealign.encoder_lr=0.01",
        "encoder.experts.sam.frozen=true",
    )  # fmt: skip
    run = Path(result.stdout.strip().splitlines()[-1])
    init, prealign = run / "checkpoints" / "init", run / "checkpoints" / "prealign"
    before, after = load_file(init / "modules.safetensors"), load_file(prealign / "modules.safetensors")
    for expert in ("clip", "sam"):  # each expert's own projector trained
        key = f"prealign_projectors.{expert}.0.weight"
        assert not before[key].equal(after[key])
    assert before["projector.0.weight"].equal(after["projector.0.weight"])  # the joint one waits
    clip_before = load_file(init / "experts" / "clip" / "model.safetensors")
    clip_after = load_file(prealign / "experts" / "clip" / "model.safetensors")
    sam_source = json.loads((run / "summary.json").read_text())["experts"]["sam"]["source"]
    sam_before = load_file(Path(sam_source) / "model.safetensors")
    sam_after = load_file(prealign / "experts" / "sam" / "model.safetensors")
    assert any(not clip_before[k].equal(clip_after[k]) for k in clip_before)  # unfrozen: adapted
    assert all(sam_before[k].equal(sam_after[k]) for k in sam_before)  # frozen: untouched


def test_single_expert_prealign_warm_starts_the_joint_projector(fast_run):
    prealign = load_file(fast_run / "checkpoints" / "prealign" / "modules.safetensors")
    for key in ("0.weight", "0.bias", "2.weight"):
        assert prealign[f"projector.{key}"].equal(prealign[f"prealign_projectors.clip.{key}"])


def test_a_sweep_plans_single_expert_cross_attention_as_invalid(cache_dir, tmp_path):
    result = cli(
        "sweep", "debug=fast", f"paths.runs={tmp_path}", "encoder=clip,clip+sam", "fusion=xattn", "--dry-run"
    )
    plan = " ".join(result.stderr.split())
    assert plan.count("│ run │") == 1 and "│ 0 │ encoder=clip │ — │ fusion=xattn" in plan


@pytest.mark.slow  # an end-to-end CLI run
def test_a_sweep_records_invalid_combinations_without_failing(fast_run):
    """A design-space grid that includes ruled-out cells (xattn with one expert) still succeeds; those cells
    are recorded as invalid with their reason, and a sweep of nothing but invalid cells fails."""
    runs = fast_run.parent.parent
    result = cli("sweep", "debug=fast", "logger=none", f"paths.runs={runs}", "fusion=concat,xattn")
    entries = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "sweep.json").read_text())["runs"]
    assert [e["status"] for e in entries] in (["skipped", "invalid"], ["complete", "invalid"])
    assert "needs at least two experts" in entries[1]["error"]
    alone = cli("sweep", "debug=fast", "logger=none", f"paths.runs={runs}", "fusion=xattn", check=False)
    assert alone.returncode == 1 and "1 invalid" in " ".join(alone.stderr.split())
