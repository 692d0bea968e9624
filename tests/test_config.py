"""The config tree composes in every option of every group, and bad input fails with one clear line."""

from __future__ import annotations

import warnings

import pytest

from mmcompress.config import config_dir, group_options, load_config
from mmcompress.errors import ConfigError
from mmcompress.training.checks import validate
from tests.conftest import cli

GROUP_OPTIONS = [(g, o) for g, options in group_options().items() for o in options]
# Options that are valid only beside another choice.
COMPANIONS = {"fusion=xattn": ["encoder=clip+sam"]}


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes(compose, group, option):
    cfg = compose(f"{group}={option}", *COMPANIONS.get(f"{group}={option}", []))
    assert cfg.choices[group] == option
    if option in ("hf", "llava"):  # these need a path from the user, and say so
        with pytest.raises(ConfigError, match=r"(llm|data)\.path is required"):
            validate(cfg)
    else:
        validate(cfg)


def test_conf_is_the_top_level_tree():
    assert config_dir().name == "conf" and (config_dir() / "config.yaml").is_file()


def test_defaults_are_the_embedded_experiment():
    cfg = load_config([])
    assert cfg.choices.encoder == "clip" and cfg.choices.llm == "tiny" and cfg.choices.data == "synthvqa"
    assert list(cfg.stages) == ["prealign", "align", "finetune", "eval"]


def test_unknown_option_is_one_line_exit_2():
    result = cli("config", "encoder=nope", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown encoder 'nope'" in lines[0] and "clip-l336" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=[1,", "malformed override"),
        ("justaword", "malformed override"),
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
    ],
)
def test_bad_overrides_are_one_line(override, message):
    result = cli("config", override, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage.finetune.lr=abc", "stage.finetune.lr='abc' must be a positive float"),
        ("stage.align.steps=0", "stage.align.steps=0 must be a positive int"),
        ("stages=[align,bake]", "unknown stage(s) ['bake']"),
        ("optim.schedule=linear", "optim.schedule='linear' is not one of cosine, wsd, constant"),
        ("llm.name=gpt", "unknown llm 'gpt'; valid options: hf, tiny"),
        ("+encoder.experts.dino.input_size=112", "encoder.experts.dino has settings but no family"),
        ("encoder.experts.clip.family=vit", "unknown expert family 'vit'"),
    ],
)
def test_bad_values_are_caught_before_work(compose, override, message):
    with pytest.raises(ConfigError) as excinfo:
        validate(compose(override))
    assert message in str(excinfo.value)


def test_missing_data_path_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    result = cli(
        "train", "data=llava", f"data.path={missing}", "logger=none", f"paths.runs={tmp_path}", check=False
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in result.stderr


def test_debug_flag_shows_traceback():
    result = cli("--debug", "config", "encoder=nope", check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize("debug", [False, True])
def test_library_deprecation_notices_show_only_with_debug(debug):
    from mmcompress.cli.app import _main

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        _main(debug=debug)
        warnings.warn("`past_key_values` is deprecated", FutureWarning, stacklevel=1)
    assert len(shown) == int(debug)


def test_user_config_dir_adds_options(tmp_path):
    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "my-clip.yaml").write_text(
        "experts:\n  clip:\n    family: clip\n    checkpoint: /some/local/clip\n    select_layer: -1\n    mini: null\n"
    )
    result = cli("config", "encoder=my-clip", "--config-dir", str(tmp_path))
    assert "checkpoint: /some/local/clip" in result.stdout
    listing = cli("config", "--groups", "--config-dir", str(tmp_path)).stderr
    assert "my-clip" in listing


def test_config_prints_composed_yaml():
    out = cli("config", "stage.finetune.lr=0.005").stdout
    assert "lr: 0.005" in out and "encoder:" in out


def test_help_everywhere():
    for command in ([], ["train"], ["eval"], ["config"], ["pretrain-expert"]):
        result = cli(*command, "--help")
        assert "Usage" in result.stdout
