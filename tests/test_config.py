"""The config tree composes in every option of every group, and bad input fails with one clear line."""

from __future__ import annotations

import warnings

import pytest
from omegaconf import OmegaConf

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
    if option in (
        "hf",
        "llava",
        "llava15",
        "eagle-x4",
        "prumerge-lora",
    ):  # these need a user's path, and say so
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
        ("train.num_workers=-1", "train.num_workers=-1 must be auto or an integer ≥ 0"),
        ("train.feature_store_max_gb=-1", "train.feature_store_max_gb=-1 must be a positive number of GB"),
        ("stage.finetune.epochs=0", "stage.finetune.epochs=0 must be a positive float"),
        ("~llm.lr", "llm.lr.prealign is not set: every llm option names its stage learning rates"),
    ],
)
def test_bad_values_are_caught_before_work(compose, override, message):
    with pytest.raises(ConfigError) as excinfo:
        validate(compose(override))
    assert message in str(excinfo.value)


def test_stage_learning_rates_are_the_chosen_llms(compose):
    """A real LLM never inherits the tiny model's finetune rate (1e-3 took a 1.1 B Llama's loss to 12)."""
    tiny, real = compose(), compose("llm=smollm2-135m")
    assert [tiny.stage[s].lr for s in ("prealign", "align", "finetune")] == [1e-3, 1e-3, 1e-3]
    assert [real.stage[s].lr for s in ("prealign", "align", "finetune")] == [1e-3, 1e-3, 2e-5]
    assert compose("llm=hf", "llm.path=/x").stage.finetune.lr == 2e-5
    assert compose("llm=smollm2-135m", "stage.finetune.lr=1e-4").stage.finetune.lr == 1e-4


def test_a_stage_in_epochs_runs_the_steps_its_passes_take(compose):
    from mmcompress.training.stages import steps_from_epochs

    cfg = compose("stage.align.epochs=2", "stage.align.batch_size=64", "stage.finetune.epochs=0.5")
    validate(cfg)
    steps_from_epochs(cfg, 1000)
    assert cfg.stage.align.steps == 32  # 2000 / 64 = 31.25, rounded up
    assert cfg.stage.finetune.steps == 63  # 500 / 8
    assert cfg.stage.prealign.steps == 3  # given in steps (debug=fast): unchanged


RECIPES = {  # preset: what the published recipe says, (stage, key) → value
    "llava15": {("align", "lr"): 1e-3, ("align", "batch_size"): 256, ("finetune", "lr"): 2e-5,
                ("finetune", "batch_size"): 128, ("finetune", "epochs"): 1},
    "eagle-x4": {("prealign", "trainable"): ["projector"], ("align", "batch_size"): 256,
                 ("finetune", "trainable"): ["projector", "llm", "encoder"], ("finetune", "encoder_lr"): 2e-5},
    "prumerge-lora": {("finetune", "lr"): 2e-4, ("finetune", "batch_size"): 128},
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_real_model_presets_carry_the_published_recipes(preset, tmp_path):
    cfg = load_config([f"experiment={preset}", f"data.path={tmp_path}", "logger=none"])  # not debug=fast
    validate(cfg)
    for (stage, key), value in RECIPES[preset].items():
        assert OmegaConf.to_object(cfg.stage[stage])[key] == value, (stage, key)
    assert (cfg.optim.schedule, cfg.optim.warmup_ratio, cfg.precision) == ("cosine", 0.03, "bf16")
    assert cfg.train.gradient_checkpointing and cfg.llm.path == "lmsys/vicuna-7b-v1.5"
    assert all(cfg.stage[s].epochs == 1 for s in cfg.stages if s != "eval")
    if preset == "prumerge-lora":
        assert (cfg.lora.r, cfg.lora.alpha, cfg.pruning.name) == (128, 256, "prumerge")
    if preset == "eagle-x4":
        assert list(cfg.encoder.experts) == ["clip", "convnext", "sam", "pix2struct"] and cfg.grid == [32, 32]


def test_vicuna_template_supervises_exactly_the_answers(compose):
    """LLaVA's vicuna_v1 format: prompts unsupervised, each answer and its </s> supervised, the generation
    prompt ending in "ASSISTANT:"."""
    from mmcompress.data.llava import encode_for_training
    from mmcompress.model.llm import build_word_tokenizer

    template = compose("llm=vicuna-7b").llm.chat_template
    tokenizer = build_word_tokenizer(["a chat user assistant what colour is it red and the shape square"])
    tokenizer.chat_template = template
    messages = [
        {"role": "user", "content": "<image> what colour is it ?"},
        {"role": "assistant", "content": "red"},
    ]
    messages += [{"role": "user", "content": "and the shape ?"}, {"role": "assistant", "content": "square"}]
    text = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert text.startswith("A chat between a curious user and an artificial intelligence assistant. The")
    assert text.endswith("questions. USER: <image> what colour is it ? ASSISTANT:")
    sample = type("Sample", (), {"id": "s", "messages": tuple(messages)})
    [(ids, labels)] = encode_for_training([sample], tokenizer, 512)
    supervised = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])
    assert supervised.split() == ["red", "</s>", "square", "</s>"]


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
