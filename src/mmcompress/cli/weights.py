"""`mmcompress weights`: the pretrained models mmcompress knows, where each would come from, and fetching
them (from the hub, or, where it cannot be reached, their stand-ins from the package registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmcompress.cli.app import ConfigDirs, app, compose
from mmcompress.console import console

weights = typer.Typer(
    help="Pretrained models: list the known ones, fetch them (offline: their stand-ins from the registry).",
    no_args_is_help=True,
)
app.add_typer(weights, name="weights")


@weights.command("list")
def list_(config_dir: ConfigDirs = None) -> None:
    """Every model a config option names: its hub id, the registry package that can stand in for it, and
    what this machine already has."""
    from rich.table import Table

    from mmcompress.config import extra_config_dirs
    from mmcompress.hub.catalog import known_models
    from mmcompress.hub.resolve import status

    cache = Path(compose([], config_dir).paths.cache)
    table = Table("name", "group", "hub id", "without the hub", "on this machine")
    for model in known_models(extra_config_dirs(config_dir or [])).values():
        stand_in = model.stand_in
        source = f"{stand_in.requirement} ({stand_in.licence})" if stand_in else "—"
        table.add_row(model.name, model.group, model.hub_id, source, status(model.hub_id, cache))
    console.print(table)


@weights.command()
def fetch(
    names: Annotated[
        list[str], typer.Argument(help="Model names from `mmcompress weights list` (or hub ids).")
    ],
    config_dir: ConfigDirs = None,
) -> None:
    """Make models loadable here from now on (hub cache, or a stand-in built into the cache)."""
    from mmcompress.config import extra_config_dirs
    from mmcompress.hub.catalog import known
    from mmcompress.hub.resolve import fetch as fetch_model

    cache = Path(compose([], config_dir).paths.cache)
    models = [known(name, extra_config_dirs(config_dir or [])) for name in names]  # unknown names fail first
    for model in models:
        where = fetch_model(model.hub_id, cache)
        console.print(f"[green]{model.name}[/] ({model.hub_id}): {where}")
        typer.echo(where)
