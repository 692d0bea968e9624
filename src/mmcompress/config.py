"""Config composition: Hydra's compose API behind one function, with errors turned into one-line messages.

Typer owns the command line; bare ``key=value`` tokens are Hydra overrides composed here. The config tree
is ``conf/`` at the repository root (editable installs) or ``mmcompress/conf`` inside the wheel; more
directories join Hydra's search path through ``--config-dir`` or ``MMCOMPRESS_CONFIG_PATH`` and are
searched first, so a user's ``encoder/my-clip.yaml`` becomes ``encoder=my-clip``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mmcompress.errors import ConfigError

CONFIG_NAME = "config"
SEARCH_PATH_ENV = "MMCOMPRESS_CONFIG_PATH"
# Directories of the config tree that are not user-facing config groups.
_NOT_GROUPS = {"hydra"}


def config_dir() -> Path:
    """The packaged config tree: inside the wheel, else the repository's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise ConfigError(
        f"mmcompress's config tree was not found next to {here}; reinstall with `pip install -e .`"
    )


def extra_config_dirs(cli_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """User config directories, searched before the packaged tree (CLI first, then the environment)."""
    env_dirs = [d for d in os.environ.get(SEARCH_PATH_ENV, "").split(os.pathsep) if d]
    dirs = [Path(d).expanduser().resolve() for d in [*cli_dirs, *env_dirs]]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"config directory {d} does not exist; fix --config-dir or ${SEARCH_PATH_ENV}")
    return dirs


def group_options(extra_dirs: Sequence[Path] = ()) -> dict[str, list[str]]:
    """Every config group and its options (the yaml files under each group directory)."""
    options: dict[str, set[str]] = {}
    for root in [config_dir(), *extra_dirs]:
        for group_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in _NOT_GROUPS):
            options.setdefault(group_dir.name, set()).update(p.stem for p in group_dir.glob("*.yaml"))
    return {group: sorted(names) for group, names in sorted(options.items())}


def load_config(overrides: Sequence[str] = (), extra_dirs: Sequence[Path] = ()) -> DictConfig:
    """Compose the config from overrides; `cfg.choices` records the option chosen in every group."""
    overrides, mixture = _expert_mixture(overrides)
    search = ["hydra.searchpath=[" + ",".join(f"file://{d}" for d in extra_dirs) + "]"] if extra_dirs else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="mmcompress"):
            cfg = compose(CONFIG_NAME, overrides=[*search, *overrides], return_hydra_config=True)
    except MissingConfigException as exc:
        raise ConfigError(_unknown_option_message(exc, extra_dirs)) from None
    except OverrideParseException as exc:
        raise ConfigError(f"malformed override: {_first_line(exc)}; overrides look like key=value") from None
    except (ConfigCompositionException, OmegaConfBaseException) as exc:
        raise ConfigError(_composition_message(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/") and v}
    if mixture:
        choices["encoder"] = mixture
        if len(cfg.encoder.experts) < mixture.count("+") + 1:
            raise ConfigError(
                f"encoder={mixture}: two of these configs define the same expert ({', '.join(cfg.encoder.experts)}); "
                "a mixture joins different experts"
            )
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.choices = choices
    return cfg


def _expert_mixture(overrides: Sequence[str]) -> tuple[list[str], str | None]:
    """`encoder=clip+sam` → Hydra's multi-option selection `encoder=[clip,sam]` (each file adds its expert
    under `encoder.experts`, in order); returns the rewritten overrides and the mixture's name."""
    rewritten, mixture = [], None
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "encoder" and "+" in value:
            names = [n.strip() for n in value.split("+")]
            if "" in names or len(set(names)) < len(names):
                raise ConfigError(
                    f"encoder={value}: join distinct expert configs with '+', e.g. encoder=clip+sam"
                )
            rewritten.append(f"encoder=[{','.join(names)}]")
            mixture = value
        else:
            rewritten.append(override)
    return rewritten, mixture


def _first_line(exc: BaseException) -> str:
    """The first non-empty message along the exception's cause chain, folded onto one line."""
    while not str(exc).strip() and (exc.__cause__ or exc.__context__):
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip() or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:400]


def _unknown_option_message(exc: MissingConfigException, extra_dirs: Sequence[Path]) -> str:
    match = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", str(exc))
    if not match:
        return f"config not found: {_first_line(exc)}"
    group, name = match.groups()
    valid = group_options(extra_dirs).get(group, [])
    return f"unknown {group} '{name}'; valid options: {', '.join(valid)} (see `mmcompress config --groups`)"


def _composition_message(exc: BaseException) -> str:
    text = str(exc)
    cause = exc.__cause__ or exc
    key = re.search(r"Could not (?:override|append to) '([^']+)'", text)
    if key and ("not in struct" in str(cause) or "Key '" in str(cause)):
        return f"unknown config key '{key.group(1)}'; check the spelling with `mmcompress config`"
    if key:
        return f"bad value for '{key.group(1)}': {_first_line(cause)}"
    return f"config error: {_first_line(exc)}"


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply plain `key=value` overrides to a stored (already composed) config, e.g. a run's config.yaml."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(f"malformed override: {_first_line(exc)}; overrides look like key=value") from None
    cfg = cfg.copy()
    _missing = object()
    for override in parsed:
        key = override.key_or_group
        if override.is_sweep_override() or override.is_add() or override.is_delete():
            raise ConfigError(
                f"'{override.input_line}': only key=value overrides apply to a stored run config"
            )
        current = OmegaConf.select(cfg, key, default=_missing)
        if current is _missing:
            raise ConfigError(f"unknown config key '{key}' in this run's config.yaml")
        if isinstance(current, DictConfig) and not isinstance(override.value(), dict):
            raise ConfigError(
                f"'{override.input_line}': {key} is a config group, fixed for a finished run; evaluate its "
                f"model under another one with `mmcompress train init_from=RUN stages=[eval] {override.input_line}`"
            )
        OmegaConf.update(cfg, key, override.value(), merge=False)
    return cfg
