"""Speed-ups the libraries leave on the table, each measured against its plain form in one run (JSON out):

(a) ConvNeXt's forward: fp32 vs channels-last vs bf16 autocast vs both (median seconds per batch);
(b) AdamW's step over an LLM's parameters: the default (foreach) vs `fused=True`;
(c) an LLM's forward + backward in training, eager vs `torch.compile`d, over batches whose text length
    varies as the real loop's does (the compile time is reported on its own: the first calls).

Each option the trainer offers is on by default only where this benchmark shows it helps (README,
"Measured: the training loop at scale").

CPU, reduced sizes (recorded in benchmarks/results/speedups.json):
    python benchmarks/speedups.py --out benchmarks/results/speedups.json
GPU, published sizes (ConvNeXtV2-Huge at 1024 px, a 1.1 B-class LLM):
    python benchmarks/speedups.py --convnext huge --image-size 1024 --convnext-batch 8 \\
        --llm-width 2048 --llm-layers 22 --llm-heads 16 --batch 16 --seq 640
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp()  # a cold compile, as a new machine's first run

import torch  # imported after the cache directory is chosen
import transformers as hf
from harness import emit, machine, sync, timed  # benchmarks/harness.py, beside this script

CONVNEXT = {  # hidden sizes, depths (the published configurations)
    "tiny": ([96, 192, 384, 768], [3, 3, 9, 3]),
    "base": ([128, 256, 512, 1024], [3, 3, 27, 3]),
    "large": ([192, 384, 768, 1536], [3, 3, 27, 3]),
    "huge": ([352, 704, 1408, 2816], [3, 3, 27, 3]),
}


@torch.no_grad()
def convnext(args, device: torch.device) -> dict:
    """(a) ConvNeXtV2's forward to its last stage, in each memory format and precision."""
    hidden, depths = CONVNEXT[args.convnext]
    model = hf.ConvNextV2Model(hf.ConvNextV2Config(hidden_sizes=hidden, depths=depths)).to(device).eval()
    pixels = torch.randn(
        args.convnext_batch, 3, args.image_size, args.image_size, device=device
    )  # (B, 3, H, W)
    rows = {}
    for channels_last in (False, True):
        model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        x = pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels
        for bf16 in (False, True):

            def forward(model=model, x=x, bf16=bf16):
                with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    return model(pixel_values=x).last_hidden_state

            name = ("bf16" if bf16 else "fp32") + ("+channels_last" if channels_last else "")
            rows[name] = timed(forward, device, args.repeats)
    return {
        "model": f"ConvNeXtV2-{args.convnext}",
        "batch": args.convnext_batch,
        "image_size": args.image_size,
        "seconds": rows,
        "speedup_over_fp32": {name: rows["fp32"] / s for name, s in rows.items()},
    }


def llama(args, device: torch.device) -> hf.LlamaForCausalLM:
    config = hf.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.llm_width,
        num_hidden_layers=args.llm_layers,
        num_attention_heads=args.llm_heads,
        intermediate_size=4 * args.llm_width,
        max_position_embeddings=4 * args.seq,
    )
    return hf.LlamaForCausalLM(config).to(device)


def adamw(args, device: torch.device) -> dict:
    """(b) one AdamW step over every parameter of the LLM, with gradients present."""
    params = [p for p in llama(args, device).parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    rows = {}
    for name, options in (("foreach", {"foreach": True}), ("fused", {"fused": True})):
        optimizer = torch.optim.AdamW(params, lr=1e-5, **options)
        rows[name] = timed(optimizer.step, device, args.repeats * 3)
    return {
        "parameters": sum(p.numel() for p in params),
        "seconds": rows,
        "fused_speedup": rows["foreach"] / rows["fused"],
    }


def compiled_training(args, device: torch.device) -> dict:
    """(c) forward + backward of the LLM on embeddings, eager vs compiled, text lengths varying."""
    lengths = [args.seq - 24, args.seq - 8, args.seq]  # a batch's length is its longest prompt
    result = {"batch": args.batch, "lengths": lengths}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = llama(args, device).train()
        if name == "compiled":
            model.compile()
        batches = [
            (
                torch.randn(args.batch, n, args.llm_width, device=device) * 0.02,  # (B, L, D)
                torch.randint(0, args.vocab, (args.batch, n), device=device),  # (B, L)
            )
            for n in lengths
        ]

        def step(embeds_labels, model=model):
            embeds, labels = embeds_labels
            with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                loss = model(inputs_embeds=embeds, labels=labels).loss
            loss.backward()
            model.zero_grad(set_to_none=True)

        sync(device)
        start = time.perf_counter()
        for batch in batches:  # compiles (and recompiles for a new length) on first sight
            step(batch)
        sync(device)
        first = time.perf_counter() - start
        steady = timed(
            lambda batches=batches: [step(b) for b in batches], device, args.repeats, warmup=0
        ) / len(batches)
        result[name] = {"first_pass_s": first, "step_s": steady}
    result["compiled_speedup"] = result["eager"]["step_s"] / result["compiled"]["step_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convnext", choices=sorted(CONVNEXT), default="tiny", help="ConvNeXt size (tiny)")
    for name, default, text in (
        ("image-size", 256, "ConvNeXt input px"), ("convnext-batch", 8, "ConvNeXt batch"),
        ("llm-width", 512, "LLM width"), ("llm-layers", 4, "LLM layers"), ("llm-heads", 8, "LLM heads"),
        ("vocab", 32000, "LLM vocabulary"), ("batch", 8, "LLM training batch"), ("seq", 256, "text + visual tokens"),
        ("repeats", 3, "timed repeats"),
    ):  # fmt: skip
        parser.add_argument(f"--{name}", type=int, default=default, help=f"{text} (default {default})")
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="train the LLM in fp32, not bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    report = {
        "command": "python benchmarks/speedups.py " + " ".join(sys.argv[1:]),
        "machine": machine(device),
        "convnext": convnext(args, device),
        "adamw": adamw(args, device),
        "compile": compiled_training(args, device),
    }  # fmt: skip
    emit(report, args.out)


if __name__ == "__main__":
    main()
