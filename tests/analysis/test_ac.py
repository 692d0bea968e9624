"""The AC score's parts where the right answer is known: alignment, keypoint transfer, PCK, fit, policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmcompress.analysis.ac.fit import (
    choose_form,
    fit,
    fit_report,
    minmax,
    policy_trainings,
    poly_features,
    random_trainings,
    simulate,
)
from mmcompress.analysis.ac.pairs import TRANSFORMS, generated_pairs
from mmcompress.analysis.ac.scores import a_score, pck, transfer_keypoints


def test_a_score_of_a_representation_against_itself_is_one():
    tokens = torch.randn(3, 5, 8)
    assert a_score(tokens, tokens) == pytest.approx(1.0)


def test_a_score_by_hand():
    candidate = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    reference = torch.tensor([[[1.0, 1.0], [-1.0, 0.0]]])
    # token 1 best matches (1,1): cos 1/√2; token 2 also (1,1): 1/√2
    assert a_score(candidate, reference) == pytest.approx(1 / np.sqrt(2))
    # masking the reference's first token leaves only (-1, 0): cos -1 and 0
    assert a_score(candidate, reference, reference_mask=torch.tensor([[False, True]])) == pytest.approx(-0.5)


def _one_hot_grid(b: int, h: int, w: int) -> torch.Tensor:
    return torch.eye(h * w).repeat(b, 1, 1).view(b, h, w, h * w)  # every cell its own direction


@pytest.mark.parametrize("window", [1, 3])
def test_identity_transfer_gives_pck_one(window):
    features = _one_hot_grid(2, 4, 4)
    size = 32.0  # cells of 8 px
    centres = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="xy"), -1).reshape(-1, 2)
    points = ((centres + 0.5) * 8).float().expand(2, -1, -1)  # (2, 16, 2) every cell centre
    predicted = transfer_keypoints(features, features, points, size, window, temperature=1e-3)
    assert torch.allclose(predicted, points, atol=1e-4)
    assert pck(predicted, points, torch.tensor([size, size]), 0.05).tolist() == [1.0, 1.0]


def test_a_known_shift_is_recovered_and_scored():
    size, cells = 32.0, 4
    source = _one_hot_grid(1, cells, cells)
    target = torch.roll(source, shifts=1, dims=2)  # the content moves one cell (8 px) to the right
    points = torch.tensor([[[4.0, 4.0], [12.0, 20.0]]])  # cell centres in columns 0 and 1
    truth = points + torch.tensor([8.0, 0.0])
    predicted = transfer_keypoints(source, target, points, size, window=1)
    assert torch.allclose(predicted, truth)
    # PCK counts a prediction within alpha x extent: 8 px off is within 0.25·32 = 8 but not 0.10·32 = 3.2
    extent = torch.tensor([size])
    assert pck(points, truth, extent, 0.25).item() == 1.0
    assert pck(points, truth, extent, 0.10).item() == 0.0
    half = torch.tensor([[[4.0, 4.0], [12.0 + 8, 20.0]]])  # one right, one 8 px off
    assert pck(half, truth, extent, 0.10).item() == 0.5
    assert pck(half, truth, extent, 0.10, valid=torch.tensor([[False, True]])).item() == 1.0


def test_generated_pairs_map_keypoints_through_the_transform(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    smooth = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
    Image.fromarray(smooth).resize((64, 64), Image.BICUBIC).save(path)
    pairs = generated_pairs([path], 8, 64, keypoints=12, seed=1)
    assert [p.kind for p in pairs] == list(TRANSFORMS) * 2
    for p in pairs:
        if p.kind == "photometric":
            assert np.allclose(p.source_points, p.target_points)
            continue
        source, target = np.asarray(p.source, dtype=float), np.asarray(p.target, dtype=float)
        at = lambda image, xy: image[xy[:, 1].astype(int), xy[:, 0].astype(int)]  # noqa: E731
        matched = np.abs(at(source, p.source_points) - at(target, p.target_points)).mean()
        shuffled = np.abs(at(source, p.source_points) - at(target, p.target_points[::-1])).mean()
        assert matched < 0.5 * shuffled, p.kind  # the warped image shows the same content where mapped
        assert ((p.target_points >= 0) & (p.target_points <= 64)).all()


def test_fit_recovers_a_known_quadratic():
    rng = np.random.default_rng(0)
    a, c = rng.uniform(0, 1, 30), rng.uniform(0, 1, 30)
    truth = np.array([0.2, 0.5, -0.3, 0.4, 0.25, -0.6])  # 1, A, C, A², AC, C²
    y = poly_features([a, c]) @ truth
    assert np.allclose(fit(poly_features([a, c]), y), truth)
    report = fit_report(a, c, y)
    quadratic = report["AC quadratic"]
    assert quadratic["r2"] == pytest.approx(1.0) and quadratic["loo_r2"] == pytest.approx(1.0)
    assert report["A quadratic"]["r2"] < 0.9 and report["C quadratic"]["r2"] < 0.9  # neither alone does
    assert (
        quadratic["terms"] == 6 and report["A quadratic"]["terms"] == 3 and report["AC linear"]["terms"] == 3
    )
    assert report["AC linear"]["loo_r2"] < 0.99
    assert choose_form(report)[0] == "quadratic"


def test_the_form_with_the_better_leave_one_out_r2_is_chosen():
    """14 candidates on a noisy linear law: the quadratic fits better in-sample but predicts held-out
    candidates worse, so the linear form is chosen; with too few candidates for leave-one-out, linear too."""
    rng = np.random.default_rng(2)
    a, c = rng.uniform(0, 1, 14), rng.uniform(0, 1, 14)
    y = 0.3 + 0.5 * a + 0.4 * c + rng.normal(0, 0.08, 14)
    report = fit_report(a, c, y)
    assert report["AC quadratic"]["r2"] > report["AC linear"]["r2"]
    assert report["AC linear"]["loo_r2"] > report["AC quadratic"]["loo_r2"]
    form, why = choose_form(report)
    assert form == "linear" and f"{report['AC linear']['loo_r2']:.3f}" in why
    assert choose_form(fit_report(a[:4], c[:4], y[:4]))[0] == "linear"  # quadratic: no leave-one-out
    assert choose_form(None)[0] == "linear"


def test_minmax():
    assert minmax([2.0, 4.0, 3.0]).tolist() == [0.0, 1.0, 0.5]
    assert minmax([1.0, 1.0]).tolist() == [0.0, 0.0]


def test_policy_finds_the_best_in_fewer_trainings_than_random():
    """30 candidates whose score follows a quadratic in (A, C) with little noise: the policy's expected
    trainings are at most 60% of random choice's ((n+1)/2 = 15.5), and it finds the best within 3
    trainings at least twice as often as random (3/30 = 0.1)."""
    rng = np.random.default_rng(1)
    a, c = rng.uniform(0, 1, 30), rng.uniform(0, 1, 30)
    y = poly_features([a, c]) @ np.array([0.1, 0.6, 0.8, -0.3, 0.2, -0.4]) + rng.normal(0, 0.01, 30)
    result = simulate(a, c, y, trials=300, seed=0)
    assert result["random_expected_trainings"] == pytest.approx(15.5, abs=1.5)
    assert result["policy_expected_trainings"] <= 0.6 * result["random_expected_trainings"], result
    assert result["policy_success_within_3"] >= 2 * result["random_success_within_3_exact"], result
    assert sum(result["policy_trainings_histogram"]) == 300


def test_policy_and_random_trials_are_well_formed():
    rng = np.random.default_rng(0)
    a, c, y = rng.uniform(0, 1, 6), rng.uniform(0, 1, 6), rng.uniform(0, 1, 6)
    for _ in range(20):
        assert 2 <= policy_trainings(a, c, y, rng) <= 6
        assert 1 <= random_trainings(y, rng) <= 6


def test_next_trainings_cover_the_open_regions_first():
    from mmcompress.analysis.ac.run import Candidate, next_trainings

    def candidate(label, a, c, score=None):
        return Candidate(label, [], [Path(".")], [[]], a=a, c=c, score=score)

    corners = [candidate("low-low", 0.0, 0.0, 0.3), candidate("high-high", 1.0, 1.0, 0.9)]
    open_ = [candidate("low-high", 0.1, 0.9), candidate("high-low", 0.9, 0.1)]
    steps = next_trainings([*corners, *open_], seed=0)
    assert sorted(s["label"] for s in steps) == ["high-low", "low-high"]
    everything = [candidate(x.label, x.a, x.c, 0.5) for x in [*corners, *open_]]
    everything.append(candidate("middle", 0.5, 0.5))
    everything[-1].predicted = 0.7
    assert [s["label"] for s in next_trainings(everything, seed=0)] == ["middle"]


def test_candidate_files_are_checked(tmp_path):
    from mmcompress.analysis.ac.run import _candidate_groups
    from mmcompress.errors import UserError

    good = tmp_path / "candidates.yaml"
    good.write_text("- encoder=clip,sam\n- encoder=convnext encoder.experts.convnext.stage=2,3\n")
    assert _candidate_groups(good) == [
        ["encoder=clip,sam"],
        ["encoder=convnext", "encoder.experts.convnext.stage=2,3"],
    ]
    assert _candidate_groups(None) == [[]]
    bad = tmp_path / "bad.yaml"
    bad.write_text("encoder: clip\n")
    with pytest.raises(UserError, match="must be a YAML list of override strings"):
        _candidate_groups(bad)
    with pytest.raises(UserError, match="cannot be read"):
        _candidate_groups(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_ac_cli_on_tiny_configs(fast_run, tmp_path):
    """`mmcompress ac encoder=clip,sam`: the finished clip run is read (not retrained), sam gets its stages
    up to align only; A, C, the score, the policy's next step and the outputs are written; a rerun reuses
    the stored A and C."""
    import shutil

    from tests.conftest import cli

    runs = tmp_path / "runs"
    shutil.copytree(fast_run, runs / "default" / fast_run.name)
    finetune = (
        runs / "default" / fast_run.name / "checkpoints" / "finetune" / "modules.safetensors"
    ).read_bytes()
    args = ["ac", "encoder=clip,sam", "debug=fast", "logger=none", f"paths.runs={runs}", "--images", "8"]
    cli(*args, "--pairs", "8", "--policy", "--out", str(tmp_path / "ac"))
    result = json.loads((tmp_path / "ac" / "ac.json").read_text())
    clip, sam = result["candidates"]
    assert clip["runs"] == [str(runs / "default" / fast_run.name)]
    assert clip["a"] == pytest.approx(1.0)  # the reference is this very run
    expected = json.loads((fast_run / "summary.json").read_text())["scores"]["synthvqa"]["overall"]
    assert clip["score"] == expected and sam["score"] is None
    assert -1 <= sam["a"] < 1 and 0 <= sam["c"] <= 1 and 0 <= sam["c_pck05"] <= sam["c"]
    assert set(sam["c_by_kind"]) == {"affine", "scale", "crop", "photometric"}
    assert result["next"] and all("why" in step for step in result["next"])
    sam_run = Path(sam["runs"][0])
    assert (sam_run / "checkpoints" / "align" / "stage.json").is_file()
    assert not (sam_run / "checkpoints" / "finetune").exists()
    assert json.loads((sam_run / "summary.json").read_text())["ac"]["a"] == sam["a"]
    assert (
        runs / "default" / fast_run.name / "checkpoints" / "finetune" / "modules.safetensors"
    ).read_bytes() == finetune
    assert (tmp_path / "ac" / "ac.png").stat().st_size > 10_000 and "| sam |" in (
        tmp_path / "ac" / "ac.md"
    ).read_text()

    again = cli(*args, "--pairs", "8", "--out", str(tmp_path / "again"))
    assert "stage align complete" not in again.stdout + again.stderr  # A and C reused, nothing trained
    assert json.loads((tmp_path / "again" / "ac.json").read_text())["candidates"][1]["a"] == sam["a"]


def test_spair_loader_reads_its_layout_and_scales_to_the_square(tmp_path):

    from mmcompress.analysis.ac.pairs import load_spair
    from mmcompress.errors import UserError

    root = tmp_path / "SPair-71k"
    (root / "JPEGImages" / "cat").mkdir(parents=True)
    Image.new("RGB", (200, 100), "red").save(root / "JPEGImages" / "cat" / "a.jpg")
    Image.new("RGB", (100, 400), "blue").save(root / "JPEGImages" / "cat" / "b.jpg")
    pair = {
        "src_imname": "a.jpg",
        "trg_imname": "b.jpg",
        "category": "cat",
        "src_kps": [[100, 50], [20, 10]],
        "trg_kps": [[50, 200], [10, 40]],
        "trg_bndbox": [10, 40, 60, 240],
    }
    (root / "PairAnnotation" / "test").mkdir(parents=True)
    (root / "PairAnnotation" / "test" / "0-a-b:cat.json").write_text(json.dumps(pair))
    (loaded,) = load_spair(root, "test", 64)
    assert loaded.source.size == loaded.target.size == (64, 64)
    assert np.allclose(loaded.source_points, [[32, 32], [6.4, 6.4]])
    assert np.allclose(loaded.target_points, [[32, 32], [6.4, 6.4]])
    assert loaded.extent == pytest.approx(32.0)  # the box is 50 x 200 → 32 x 32 after scaling
    assert loaded.kind == "cat"
    with pytest.raises(UserError, match="no SPair-71k pairs"):
        load_spair(root, "trn", 64)
    (root / "PairAnnotation" / "test" / "1-bad.json").write_text("{}")
    with pytest.raises(UserError, match="is not an SPair-71k pair annotation"):
        load_spair(root, "test", 64)


def test_a_candidate_over_seeds_is_the_mean_of_its_runs(tmp_path):
    """`--seeds`: a candidate's A, C and score are the means over its runs (stored A and C are reused); its
    score counts only once every seed's training has finished."""
    from mmcompress.analysis.ac.output import _score as score_cell
    from mmcompress.analysis.ac.run import Candidate, Probe, _score

    probe = Probe(images=[], pairs=[], window=3, references=[], key={"probe": 1})

    def run(name, a, c, score):
        path = tmp_path / name
        (path / "checkpoints" / "finetune").mkdir(parents=True)
        if score is not None:
            (path / "checkpoints" / "finetune" / "stage.json").write_text('{"status": "complete"}')
        stored = {"a": a, "c": c, "c_pck05": c / 2, "c_by_kind": {"shift": c}, "key": probe.key}
        summary = {"status": "complete" if score is not None else "running", "ac": stored,
                   "scores": {"synthvqa": {"overall": score}}}  # fmt: skip
        (path / "summary.json").write_text(json.dumps(summary))
        return path

    done = Candidate("clip", [], [run("c0", 0.5, 0.2, 0.80), run("c1", 0.7, 0.4, 0.90)], [[], []])
    partial = Candidate("sam", [], [run("s0", 0.1, 0.1, 0.60), run("s1", 0.3, 0.3, None)], [[], []])
    _score([done, partial], probe, "synthvqa", "cpu", ())
    assert (done.a, done.c, done.c_strict) == pytest.approx((0.6, 0.3, 0.15))
    assert done.extra == pytest.approx({"shift": 0.3})
    assert (done.score, done.score_std) == pytest.approx((0.85, 0.0707), abs=1e-4)
    assert partial.a == pytest.approx(0.2) and partial.score is None  # seed 1 is still training
    cell = score_cell({"score": done.score, "score_std": done.score_std, "runs": ["c0", "c1"]})
    assert cell == "0.850 ± 0.071 (n=2)"
