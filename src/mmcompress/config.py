"""Config composition: Hydra's compose API behind one function, with errors turned into one-line messages.

Typer owns the command line; bare ``key=value`` tokens are Hydra overrides composed here. The config tree
is ``conf/`` at the repository root (editable installs) or ``mmcompress/conf`` inside the wheel; more
directories join Hydra's search path through ``--config-dir`` or ``MMCOMPRESS_CONFIG_PATH`` and are
searched first, so a user's ``encoder/my-clip.yaml`` becomes ``encoder=my-clip``.

Credentials never enter a config: the config is written to every run's config.yaml and overrides.txt and
mirrored to W&B, so an override whose key looks like a credential (``logger.api_key=…``, ``+hf_token=…``),
such a key in a user's config file, or any value holding a credential from the environment
(``$WANDB_API_KEY``, e.g. through ``${oc.env:…}``) is refused before anything is written.
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
# Words of a key or environment-variable name that make it a credential (`api_key`, `HF_TOKEN`, `apiKey`);
# plurals like `max_new_tokens` and a tokenizer's `pad_token` or `image_token` are ordinary keys.
_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "credential", "credentials", "apikey"}
_KEY_QUALIFIERS = {"api", "access", "private", "secret", "auth"}  # `<qualifier>_key` is a credential
# A tokenizer's `<word>_token` is no credential.
_TOKENIZER_WORDS = {"image", "pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "max"}
_NOT_SECRET_SUFFIXES = {"path", "file", "dir", "url", "host"}  # HF_TOKEN_PATH names where a secret is
_USE_ENV_INSTEAD = (
    "credentials never go into the config (it is written to config.yaml, overrides.txt and W&B): "
    "set the WANDB_API_KEY environment variable or run `wandb login` instead"
)


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
    refuse_secret_overrides(overrides)
    overrides, mixture = _expert_mixture(overrides)
    search = ["hydra.searchpath=[" + ",".join(f"file://{d}" for d in extra_dirs) + "]"] if extra_dirs else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="mmcompress"):
            cfg = compose(CONFIG_NAME, overrides=[*search, *overrides], return_hydra_config=True)
    except MissingConfigException as exc:
        raise ConfigError(_unknown_option_message(exc, extra_dirs)) from None
    except OverrideParseException:
        raise _malformed_override(overrides) from None
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
    _refuse_secret_values(cfg)
    return cfg


def looks_like_secret(name: str) -> bool:
    """Whether a config key or environment variable name names a credential: `api_key`, `WANDB_API_KEY`,
    `apiKey`, `hf_token`, `secret`, `password` (but not `max_new_tokens`, `pad_token` or `HF_TOKEN_PATH`)."""
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if w]
    if not words or words[-1] in _NOT_SECRET_SUFFIXES:
        return False
    for previous, word in zip(["", *words], words, strict=False):
        if word in _SECRET_WORDS:
            return True
        if (word == "token" and previous not in _TOKENIZER_WORDS) or (
            word == "key" and previous in _KEY_QUALIFIERS
        ):
            return True
    return False


def refuse_secret_overrides(overrides: Sequence[str]) -> None:
    """A one-line ConfigError, naming the key but never its value, for an override that would put a
    credential into the config: a credential-like key, or the value of a credential environment variable."""
    secrets = _environment_secrets()
    for override in overrides:
        key, eq, _ = override.partition("=")
        parts = re.split(r"[./@]", key.lstrip("+~").strip())
        if eq and any(looks_like_secret(part) for part in parts):
            raise ConfigError(f"'{key}' looks like a credential; {_USE_ENV_INSTEAD}")
        for name, value in secrets.items():
            if value in override:
                raise ConfigError(f"an override holds the value of ${name}; {_USE_ENV_INSTEAD}")


def _environment_secrets() -> dict[str, str]:
    """Credential environment variables (WANDB_API_KEY, HF_TOKEN …) long enough to be real keys."""
    return {k: v for k, v in os.environ.items() if len(v) >= 16 and looks_like_secret(k)}


def _refuse_secret_values(cfg: DictConfig) -> None:
    """Refuse a composed config holding a credential: a credential-like key with a string value (`api_key:` in
    a user's config file), or an environment credential anywhere, e.g. through `${oc.env:WANDB_API_KEY}`.
    A config that does not resolve is left to the checks that follow."""
    secrets = _environment_secrets()
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return
    stack: list[tuple[str, object]] = [("", tree)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict | list):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in items)
            continue
        if not isinstance(node, str):
            continue  # a flag like `use_auth_token: false` is no credential
        if node and looks_like_secret(path.rsplit(".", 1)[-1]):
            raise ConfigError(f"config key '{path}' looks like a credential; {_USE_ENV_INSTEAD}")
        for name, value in secrets.items():
            if value in node:
                raise ConfigError(f"config key '{path}' holds the value of ${name}; {_USE_ENV_INSTEAD}")


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


def _malformed_override(overrides: Sequence[str]) -> ConfigError:
    """Name the override Hydra cannot parse, and why, without Hydra's pointer to its docs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as exc:
            reason = re.sub(r"\s*See https?://\S+ for details\.?", "", _first_line(exc))
            return ConfigError(
                f"malformed override {override!r}: {reason}; overrides are key=value, with lists as "
                "key=[a,b] (quote the whole override in the shell)"
            )
    return ConfigError(f"malformed overrides {list(overrides)}; overrides are key=value")


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

    refuse_secret_overrides(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException:
        raise _malformed_override(overrides) from None
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
    _refuse_secret_values(cfg)
    return cfg
