"""experiments/reproduce.py: every experiment states its smallest configuration and recorded figure, and a
rerun of a configuration reproduces the figure it recorded (exactly, on one machine at one code version)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.experiments import EXPERIMENTS, load_script


@pytest.fixture(scope="module")
def reproduce():
    return load_script("reproduce.py", "experiments_reproduce")


def test_every_experiment_states_its_smallest_configuration(reproduce):
    known = reproduce.specs()
    folders = {p.name for p in EXPERIMENTS.iterdir() if (p / "README.md").is_file()}
    assert folders and folders == set(known), f"experiments without {reproduce.SPEC}: {folders - set(known)}"
    for spec in known.values():
        assert (
            (spec.train is None) != (spec.script is None)
            and spec.tolerance >= 0
            and spec.why
            and spec.code_version
        )
        assert 0 <= spec.recorded <= 1


def _spec(root, recorded: float, tolerance: float) -> None:
    (root / "tiny").mkdir(parents=True, exist_ok=True)
    (root / "tiny" / "reproduce.yaml").write_text(
        yaml.safe_dump(
            {
                "train": ["debug=fast"],
                "figure": "scores.synthvqa.overall",
                "recorded": recorded,
                "tolerance": tolerance,
                "why": "a test",
                "code_version": "0123456789",
                "minutes": 0.2,
            }
        )
    )


def test_a_rerun_reproduces_the_recorded_figure_and_a_wrong_one_fails(reproduce, fast_run, tmp_path, capsys):
    recorded = json.loads((fast_run / "summary.json").read_text())["scores"]["synthvqa"]["overall"]
    _spec(tmp_path / "root", recorded, 0.0)
    code = reproduce.main(["tiny", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "runs")])
    line = capsys.readouterr().out
    assert code == 0 and "tiny: reproduced" in line and "recorded at 0123456789" in line
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    ok, line = reproduce.verdict(reproduce.Spec.read(tmp_path / "root" / "tiny"), summary)
    assert ok
    _spec(tmp_path / "root", recorded + 0.3, 0.1)
    ok, line = reproduce.verdict(reproduce.Spec.read(tmp_path / "root" / "tiny"), summary)
    assert not ok and "NOT reproduced" in line


def test_unknown_experiment_is_one_line_and_exit_2(reproduce, tmp_path, capsys):
    _spec(tmp_path, 0.5, 0.1)
    assert reproduce.main(["nope", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no reproduce.yaml for 'nope'; choose one of: tiny")
    assert reproduce.main(["--root", str(tmp_path)]) == 0
    assert "tiny: scores.synthvqa.overall = 0.5 ± 0.1" in capsys.readouterr().out
