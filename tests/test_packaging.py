"""A regular (non-editable) install carries conf/ inside the package and finds it there."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from mmcompress.config import config_dir


@pytest.mark.slow
def test_wheel_ships_the_config_tree(tmp_path):
    root = config_dir().parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("mmcompress-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    expected = {
        p.relative_to(root).as_posix().replace("conf/", "mmcompress/conf/", 1)
        for p in config_dir().rglob("*.yaml")
    }
    assert expected <= set(names)
    assert any(
        n.startswith("mmcompress/weights/clip-mini-") and n.endswith("model.safetensors") for n in names
    )
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mmcompress.config import config_dir, load_config; print(config_dir()); load_config([])\n"
            "from mmcompress.vision.families import EXPERTS; print(' '.join(EXPERTS.names()))",
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""},
        check=True,
    ).stdout.strip()
    conf, families = found.splitlines()
    assert conf == str(tmp_path / "site" / "mmcompress" / "conf")
    assert families.split() == [
        "clip",
        "convnext",
        "dinov2",
        "pix2struct",
        "sam",
        "siglip",
    ]  # found in the installed package
