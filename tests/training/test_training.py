"""Training hygiene on a tiny run, in-process: bf16 autocast over fp32 weights, gradient checkpointing,
fused AdamW, torch.compile, LoRA through peft (merged at the end), and a NaN loss that stops the run keeping the last good state."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from mmcompress.data import splits
from mmcompress.errors import ConfigError
from mmcompress.training.checks import validate
from mmcompress.training.run import new_model, run_directory
from mmcompress.training.stages import set_trainable
from mmcompress.training.trainer import Trainer
from tests.conftest import cli


@pytest.fixture
def finetune(compose):
    """Run the finetune stage alone on a fresh debug=fast model; returns (trainer, run, losses)."""

    def _finetune(*overrides: str, hook=None):
        cfg = compose("stages=[finetune]", "stage.finetune.steps=3", *overrides)
        validate(cfg)
        run = run_directory(cfg)
        run.create(cfg, list(overrides))
        split = splits.load(cfg, "train")
        torch.manual_seed(cfg.seed)
        trainer = Trainer(cfg, new_model(cfg, split, run), split, None, torch.device("cpu"))
        logged = []
        trainer._log = logged.append
        if hook is not None:
            hook(trainer.model)
        trainer.run_stage("finetune", run)
        return trainer, run, [r["loss"] for r in logged]

    return _finetune


def test_bf16_autocast_keeps_fp32_weights(finetune):
    _, _, fp32 = finetune()
    trainer, run, bf16 = finetune("precision=bf16")
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights
    saved = load_file(run.checkpoint("finetune") / "llm" / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32}
    first = abs(bf16[0] - fp32[0]) / fp32[0]
    assert 0 < first < 0.02  # the same start, computed in bfloat16: close, not identical


def test_gradient_checkpointing_saves_less_for_backward_and_keeps_the_losses(finetune):
    def saved_bytes(*overrides):
        """Bytes autograd keeps for backward outside checkpointed regions, and the losses."""
        total = []

        def pack(tensor):
            total.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            _, _, losses = finetune(*overrides)
        return sum(total), losses

    plain, plain_losses = saved_bytes()
    checkpointed, checkpointed_losses = saved_bytes("train.gradient_checkpointing=true")
    assert checkpointed < 0.7 * plain  # the LLM layers' activations are recomputed, not kept
    assert checkpointed_losses == pytest.approx(plain_losses, rel=1e-6)


def test_experts_on_pixels_from_workers_train_exactly_as_from_the_main_process(finetune):
    """Each step's images are a pure function of (seed, stage, step): the workers change only when they are
    decoded, so the losses are the same to the bit, with micro-batches too."""
    on_pixels = ("train.cache_features=off", "stage.finetune.trainable=[projector,llm]")
    _, _, alone = finetune(*on_pixels, "train.num_workers=0")
    _, _, workers = finetune(*on_pixels, "train.num_workers=2", "name=workers")
    _, _, micro = finetune(*on_pixels, "train.num_workers=2", "train.micro_batch_size=3", "name=micro")
    assert len(alone) == 3 and alone == workers
    assert micro == pytest.approx(alone, rel=1e-5)


def test_adamw_is_fused_by_default_and_updates_as_foreach_does(finetune, monkeypatch):
    made = []
    build = Trainer._optimizer
    monkeypatch.setattr(Trainer, "_optimizer", lambda self, *a: made.append(build(self, *a)) or made[-1])
    _, _, fused = finetune()
    _, _, foreach = finetune("optim.fused=false", "name=foreach")
    assert [o.defaults["fused"] for o in made] == [True, False]
    assert fused[-1] != fused[0] and fused == pytest.approx(foreach, rel=1e-5)


@pytest.mark.slow
def test_compiled_training_matches_eager_and_leaves_generation_eager(finetune):
    torch._dynamo.reset()
    eager_trainer, _, eager = finetune()
    compiled_trainer, _, compiled = finetune("train.compile=true", "name=compiled")
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    assert frames > 0  # the decoder's forward went through dynamo
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert compiled_trainer.model.training_decoder is None  # after the stage, generation runs the plain LLM
    for name, tensor in compiled_trainer.model.llm.state_dict().items():  # same parameters, same names
        assert torch.allclose(tensor, eager_trainer.model.llm.state_dict()[name], atol=1e-4), name


def test_lora_trains_adapters_only_and_saves_a_merged_llm(finetune):
    trainer, run, losses = finetune("lora.r=4", "lora.alpha=8", "stage.finetune.lr=1e-2")
    init = load_file(run.checkpoint("init") / "llm" / "model.safetensors")
    tuned = load_file(run.checkpoint("finetune") / "llm" / "model.safetensors")
    assert set(tuned) == set(init)  # a plain LLM: adapters merged, no lora_ keys
    changed = {k for k in init if not torch.equal(init[k], tuned[k])}
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert not any("embed_tokens" in k or "norm" in k for k in changed)  # only LoRA's target matrices move
    assert not any("lora_" in n for n, _ in trainer.model.named_parameters())
    assert losses[-1] < losses[0]


def test_lora_counts_only_adapter_parameters(compose):
    cfg = compose("lora.r=2")
    split = splits.load(cfg, "train")
    run = run_directory(cfg)
    run.create(cfg, [])
    trainer = Trainer(cfg, new_model(cfg, split, run), split, None, torch.device("cpu"))
    names = set_trainable(trainer.model, "finetune", ["projector", "llm"], cfg.lora)
    llm = [n for n in names if n.startswith("llm.")]
    assert llm and all("lora_A" in n or "lora_B" in n for n in llm)
    assert any(n.startswith("projector.") for n in names)


def test_unfrozen_experts_train_at_encoder_lr(compose):
    cfg = compose("stage.prealign.trainable=[projector,encoder]", "stage.prealign.encoder_lr=0.01")
    split = splits.load(cfg, "train")
    run = run_directory(cfg)
    run.create(cfg, [])
    trainer = Trainer(cfg, new_model(cfg, split, run), split, None, torch.device("cpu"))
    names = set_trainable(trainer.model, "prealign", ["projector", "encoder"], cfg.lora)
    optimizer = trainer._optimizer(trainer.model, cfg.stage.prealign)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 0.01]  # projectors, then experts
    experts = [n for n in names if n.startswith("experts.")]
    assert experts and len(optimizer.param_groups[1]["params"]) == len(experts)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("precision=fp16", "precision='fp16' is not one of fp32, bf16"),
        ("lora.r=-1", "lora.r=-1 must be an integer ≥ 0"),
        ("train.micro_batch_size=0", "train.micro_batch_size=0 must be an integer ≥ 1"),
        ("distributed.nproc=0", "distributed.nproc=0 must be a positive integer"),
        ("distributed.strategy=zero3", "distributed.strategy='zero3' is not one of ddp, fsdp"),
        ("distributed.nproc=3", "stage.prealign.batch_size=8 does not split evenly over 3 processes"),
        ("distributed.timeout_min=0", "distributed.timeout_min=0 must be a positive number of minutes"),
        ("seed=x", "seed='x' must be an integer"),
    ],
)
def test_training_settings_are_checked(compose, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(compose(override))


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_state(cache_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "debug=fast", "logger=none", f"run_dir={run}", "train.checkpoint_every=1"]
    result = cli(*args, "stage.finetune.lr=1e30", "stage.finetune.steps=10", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "the finetune loss became nan at step" in line and "lower stage.finetune.lr (now 1e+30)" in line
    step = int(re.search(r"at step (\d+), before any update from it", line).group(1))
    kept = run / "checkpoints" / "finetune.resume" / f"step-{step - 1:08d}"
    assert f"the last good state (step {step - 1}) is kept in {kept}" in line
    assert (kept / "state.safetensors").is_file()
    assert all((run / "checkpoints" / s / "stage.json").is_file() for s in ("prealign", "align"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("the finetune loss became nan")


def test_an_infinite_gradient_stops_before_the_update(finetune):
    """A finite loss with an overflowing gradient (bf16, a spike) must not write inf into the weights."""
    from mmcompress.errors import UserError

    seen = {}

    def poison(model):
        seen["model"], seen["start"] = model, {k: v.clone() for k, v in model.state_dict().items()}
        model.projector[0].weight.register_hook(lambda grad: grad * float("inf"))

    with pytest.raises(UserError, match=r"the finetune gradient norm became (inf|nan) at step 1, before any"):
        finetune(hook=poison)
    now = seen["model"].state_dict()
    assert all(torch.equal(now[k], v) for k, v in seen["start"].items())  # no update was applied


@pytest.mark.parametrize(
    "override",
    ["train.compile=maybe", "optim.fused=1", "projector.positions=abc", "projector.positions=-1",
     "projector.position_at=middle"],
)  # fmt: skip
def test_bad_speed_and_position_settings_are_one_line_config_errors(compose, override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose(override))
