"""Real scale at hardware speed (JSON out): the training loop against its compute-bound ceiling, the
pruning signals' overhead, batched generation and batch-1 prefill per visual-token budget.

Builds a randomly initialised CLIP-architecture expert and a Llama-architecture LLM of the sizes given,
saves the expert as a checkpoint, generates a synthvqa world, and measures in one run:
(a) the real training loop (`Trainer.run_stage`: the expert on pixels every step, decoded and preprocessed
    by `train.num_workers` worker processes; projector + LLM trained): median samples/s of the logged
    windows after the first;
(b) its ceiling: the same model's forward, backward and AdamW step on the same batches, already
    preprocessed and on the device;
(c) a / b;
(d) the expert's forward with pruning signals ([CLS] attention and keys from the last layer's queries and
    keys) over the sdpa forward without them, at the training batch;
(e) batched greedy generation: new tokens per second at the training batch;
(f) the LLM's batch-1 prefill latency per visual-token budget (with --compile: also torch.compile'd).
The LLM is the tiny model's architecture (word-level vocabulary of the world) at the width and depth given.

CPU, reduced sizes (the defaults; recorded in benchmarks/results/scale.json):
    python benchmarks/scale.py --out benchmarks/results/scale.json
GPU, published sizes (CLIP-L/336, a 1.1 B-class LLM):
    python benchmarks/scale.py --vit-width 1024 --vit-layers 24 --vit-heads 16 --image-size 336 --patch 14 \\
        --llm-width 2048 --llm-layers 22 --llm-heads 16 --batch 16 --steps 40 --compile
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import emit, machine, sync, timed  # benchmarks/harness.py, beside this script
from omegaconf import OmegaConf

from mmcompress.config import load_config
from mmcompress.data import splits
from mmcompress.data.llava import encode_prompts, open_image, pad
from mmcompress.model.build import resolve_device
from mmcompress.model.multimodal import encode_expert
from mmcompress.pruning.plan import budget
from mmcompress.training.batches import BatchOrder
from mmcompress.training.checks import training_precision, validate
from mmcompress.training.run import new_model, run_directory
from mmcompress.training.stages import set_trainable
from mmcompress.training.trainer import Trainer
from mmcompress.vision.families.clip import CLIPExpert
from mmcompress.vision.signals import SignalSpec

BUDGETS = (1.0, 0.5, 0.25, 0.11, 0.055)
TEXT_TOKENS = 64


def save_expert(args, folder: Path) -> Path:
    mini = OmegaConf.create(
        {"hidden_size": args.vit_width, "layers": args.vit_layers, "heads": args.vit_heads,
         "image_size": args.image_size, "patch_size": args.patch}
    )  # fmt: skip
    model, processor = CLIPExpert.mini_model(mini)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def config(args, tmp: Path, expert: Path):
    overrides = [
        "logger=none",
        f"paths.runs={tmp / 'runs'}",
        f"paths.cache={tmp / 'cache'}",
        f"device={args.device}",
        f"precision={args.precision}",
        f"encoder.experts.clip.checkpoint={expert}",
        "encoder.experts.clip.select_layer=-2",
        f"llm.hidden_size={args.llm_width}",
        f"llm.layers={args.llm_layers}",
        f"llm.heads={args.llm_heads}",
        f"llm.intermediate_size={4 * args.llm_width}",
        f"world.train_images={args.images}",
        f"world.eval_questions_per_category={-(-args.batch // 6)}",  # enough val questions for one batch
        "stages=[finetune]",
        "stage.finetune.trainable=[projector,llm]",
        f"stage.finetune.steps={args.steps}",
        f"stage.finetune.batch_size={args.batch}",
        "stage.finetune.lr=1e-4",
        "train.cache_features=off",
        f"train.num_workers={args.workers}",
        "train.checkpoint_every=0",
        f"train.log_every={max(1, args.steps // 5)}",
    ]
    cfg = load_config(overrides)
    validate(cfg)
    return cfg


def training_loop(cfg, model, split, device) -> tuple[float, float]:
    """(a) samples/s of the real loop (median of the logged windows after the first) and (b) the ceiling."""
    trainer = Trainer(cfg, copy.deepcopy(model).to(device), split, None, device)
    logged = []
    trainer._log = logged.append
    run = run_directory(cfg)
    trainer.run_stage("finetune", run)
    windows = [r["samples_per_s"] for r in logged if "samples_per_s" in r][1:]
    real = statistics.median(windows)

    bare = copy.deepcopy(model).to(device)
    set_trainable(bare, "finetune", ["projector", "llm"], cfg.lora)
    params = [p for p in bare.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.stage.finetune.lr, fused=cfg.optim.fused)
    order = BatchOrder(len(trainer.text), cfg.stage.finetune.batch_size, cfg.seed)
    batches = []  # every step's inputs, prepared before the clock starts
    for step in range(1, cfg.stage.finetune.steps + 1):
        indices = order.batch(step)
        images = [open_image(split.images[i]) for i in trainer.text.image_of[indices].tolist()]
        pixels = {name: e.preprocess(images).to(device) for name, e in bare.experts.items()}
        batches.append(trainer.text.text(indices, device) | {"pixels": pixels})
    bf16 = training_precision(cfg, device) == "bf16"

    def step(batch) -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss_sum, count = bare(**batch)
        optimizer.zero_grad(set_to_none=True)
        (loss_sum / count).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()

    bare.train()
    step(batches[0])  # warm-up
    sync(device)
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    sync(device)
    ceiling = (len(batches) - 1) * cfg.stage.finetune.batch_size / (time.perf_counter() - start)
    return real, ceiling


@torch.no_grad()
def signals_overhead(model, split, batch: int, device) -> dict:
    """(d) the expert's forward with and without pruning signals, sdpa attention."""
    expert = model.experts["clip"].eval()
    images = [open_image(p) for p in split.images[:batch]]
    pixels = expert.preprocess(images).to(device)
    plain = timed(lambda: encode_expert(expert, pixels, None), device)
    signals = timed(lambda: encode_expert(expert, pixels, SignalSpec()), device)
    return {
        "attention": expert.model.config._attn_implementation,
        "forward_s": plain,
        "forward_with_signals_s": signals,
        "signals_over_plain": signals / plain,
    }


@torch.no_grad()
def generation(model, cfg, batch: int, new_tokens: int, device) -> dict:
    """(e) batched greedy decoding of val questions: new tokens per second."""
    model.eval()
    val = splits.load(cfg, "val")
    questions = val.samples[:batch]
    prompts = encode_prompts(questions, model.tokenizer)
    ids = pad(prompts, model.tokenizer.pad_token_id, side="left").to(device)  # (B, L)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    mask = (torch.arange(ids.shape[1], device=device)[None] >= (ids.shape[1] - lengths)[:, None]).long()
    images = [open_image(val.images[q.image]) for q in questions]
    features = model.encode_images({n: e.preprocess(images).to(device) for n, e in model.experts.items()})
    generated = []
    seconds = timed(lambda: generated.append(model.generate(ids, mask, features, new_tokens)[0]), device)
    produced = int((generated[-1] != model.tokenizer.pad_token_id).sum())
    return {
        "batch": len(questions),
        "new_tokens": produced,
        "seconds": seconds,
        "tokens_per_s": produced / seconds,
    }


@torch.no_grad()
def prefill(model, tokens: int, compile_too: bool, device) -> list[dict]:
    """(f) batch-1 prefill latency per visual-token budget of the expert's `tokens`."""
    llm = model.llm.eval()
    width = llm.config.hidden_size
    compiled = torch.compile(llm) if compile_too else None
    rows = []
    for ratio in BUDGETS:
        length = TEXT_TOKENS + budget(tokens, ratio)
        embeds = torch.randn(1, length, width, device=device, dtype=next(llm.parameters()).dtype) * 0.02
        row = {"ratio": ratio, "visual_tokens": budget(tokens, ratio), "eager_s": timed(
            lambda e=embeds: llm(inputs_embeds=e, use_cache=False, logits_to_keep=1), device)}  # fmt: skip
        if compiled is not None:
            row["compiled_s"] = timed(
                lambda e=embeds: compiled(inputs_embeds=e, use_cache=False, logits_to_keep=1), device
            )
        rows.append(row)
    for row in rows:
        row["eager_vs_full"] = row["eager_s"] / rows[0]["eager_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default, text in (
        ("vit-width", 384, "expert width"), ("vit-layers", 6, "expert layers"), ("vit-heads", 6, "expert heads"),
        ("image-size", 224, "expert input px"), ("patch", 16, "expert patch px"),
        ("llm-width", 512, "LLM width"), ("llm-layers", 4, "LLM layers"), ("llm-heads", 8, "LLM heads"),
        ("batch", 16, "global batch"), ("steps", 25, "timed training steps"), ("images", 400, "train images"),
        ("new-tokens", 16, "generated tokens per question"),
    ):  # fmt: skip
        parser.add_argument(f"--{name}", type=int, default=default, help=f"{text} (default {default})")
    parser.add_argument("--workers", default="auto", help="train.num_workers (default auto)")
    parser.add_argument("--precision", default="auto", help="fp32 | bf16 | auto (default auto)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd prefill")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cfg = config(args, tmp, save_expert(args, tmp / "expert"))
        split = splits.load(cfg, "train")
        run = run_directory(cfg)
        run.create(cfg, [])
        model = new_model(cfg, split, run)
        real, ceiling = training_loop(cfg, model, split, device)
        model = model.to(device)
        tokens = (args.image_size // args.patch) ** 2
        report = {
            "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
            "machine": machine(device),
            "sizes": {k: v for k, v in vars(args).items() if k not in ("out", "compile")} | {"visual_tokens": tokens},
            "precision": training_precision(cfg, device),
            "training": {"loop_samples_per_s": real, "ceiling_samples_per_s": ceiling, "loop_over_ceiling": real / ceiling},
            "signals": signals_overhead(model, split, args.batch, device),
            "generation": generation(model, cfg, args.batch, args.new_tokens, device),
            "prefill_batch_1": prefill(model, tokens, args.compile, device),
        }  # fmt: skip
    emit(report, args.out)


if __name__ == "__main__":
    main()
