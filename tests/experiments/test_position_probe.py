"""experiments/position/probe.py on finished debug=fast runs: every stage probed for row and column, and
with projector.positions the position channels make the fused tokens' place readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli
from tests.experiments import load_script


@pytest.mark.slow  # two end-to-end CLI runs
def test_probe_reads_every_stage_and_finds_the_appended_positions(fast_run, tmp_path, monkeypatch):
    probe = load_script("position/probe.py", "position_probe")
    monkeypatch.setattr(probe, "IMAGES", {"train": 300, "val": 100})
    result = cli("train", "debug=fast", "logger=none", f"paths.runs={tmp_path}", "projector.positions=4")
    positioned = Path(result.stdout.strip().splitlines()[-1])
    monkeypatch.setattr("sys.argv", ["probe.py", str(tmp_path / "out"), str(fast_run), str(positioned)])
    probe.main()
    plain, appended = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert (plain["positions"], appended["positions"]) == ("none", "4 at input")
    stages = ["expert tokens (fused)", "projected (LLM input)", "LLM layer 1", "LLM layer 2"]
    assert list(plain["probes"]) == stages
    assert all(0 <= a[axis] <= 1 for a in plain["probes"].values() for axis in ("row", "col"))
    fused = appended["probes"]["expert tokens (fused)"]
    assert fused["row"] > 0.9 and fused["col"] > 0.9  # the sin/cos channels code each cell linearly
    assert "| row accuracy | column accuracy |" in (tmp_path / "out" / "probe.md").read_text()
