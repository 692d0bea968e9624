"""What pruning costs and what it saves (JSON out), every ratio measured within one run.

(a) PruMerge on a CLIP-L/336-sized encoder (24 layers, width 1024, 577 tokens; random weights) at batch
    32: the encoder's forward time with sdpa attention (how experts load), the extra cost of the pruning
    signals (CLS attention and keys computed from the last layer's queries and keys of the same forward),
    the same forward with eager attention (what reading attention maps would need), PruMerge's own time as a fraction of the encoder's, and its speed against a
    per-image loop — both of the same vectorised core called one image at a time and of the
    straightforward per-image, per-token implementation (tests/pruning/prumerge_reference.py).
(b) LLM prefill latency at each visual-token budget against the full 576, next to the FLOPs ratio, on a
    Llama of a 7B model's width (4096, MLP 11008, 32 heads; `--layers` of them), batch 1, where the
    visual tokens dominate the prompt as in LLaVA.

python benchmarks/pruning.py [--layers 2] [--batch 32] [--repeats 3] [--out benchmarks/results/pruning.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the straightforward reference lives beside the tests

from tests.pruning.prumerge_reference import prumerge_loop  # noqa: E402

from mmcompress.evaluation.cost import prefill_flops  # noqa: E402
from mmcompress.model.multimodal import encode_expert  # noqa: E402
from mmcompress.pruning.plan import budget  # noqa: E402
from mmcompress.pruning.prumerge import prumerge  # noqa: E402
from mmcompress.vision.families.clip import CLIPExpert  # noqa: E402
from mmcompress.vision.signals import SignalSpec  # noqa: E402

BUDGETS = (1.0, 0.5, 0.25, 0.11, 0.055)
TEXT_TOKENS = 64  # system prompt, question and answer prefix of a typical LLaVA-1.5 evaluation prompt


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls (after one warm-up call) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


@torch.inference_mode()
def prumerge_cost(batch: int, repeats: int) -> dict:
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14,
    )  # fmt: skip
    model = CLIPVisionModel(config).eval()
    assert model.config._attn_implementation == "sdpa"
    expert = CLIPExpert("clip", "random CLIP-L/336", model, CLIPImageProcessorPil(), {"select_layer": -2})
    pixels = torch.randn(batch, 3, 336, 336)
    encoder_s, _ = timed(lambda: encode_expert(expert, pixels, None), 1)
    signals_s, encoded = timed(lambda: encode_expert(expert, pixels, SignalSpec()), 1)
    model.set_attn_implementation("eager")
    eager_s, _ = timed(lambda: encode_expert(expert, pixels, None), 1)
    features, keys, attention = (
        encoded.tokens,
        encoded.keys,
        encoded.importance,
    )  # (B, 576, 1024), …, (B, 576)
    batched_s, (_, mask) = timed(lambda: prumerge(features, keys, attention), repeats)
    per_image_s, _ = timed(
        lambda: [prumerge(features[b : b + 1], keys[b : b + 1], attention[b : b + 1]) for b in range(batch)],
        repeats,
    )
    loop_s, _ = timed(lambda: prumerge_loop(features, keys, attention), 1)
    kept = mask.sum(1).float()
    return {
        "setting": f"CLIP-L/336 sized, random weights, batch {batch}, 577 tokens × 1024 channels, fp32, CPU",
        "encoder_forward_s": encoder_s,
        "encoder_forward_with_signals_s": signals_s,
        "signals_overhead_fraction": signals_s / encoder_s - 1,
        "eager_encoder_forward_s": eager_s,
        "sdpa_speedup_over_eager": eager_s / encoder_s,
        "prumerge_batched_s": batched_s,
        "prumerge_fraction_of_encoder": batched_s / encoder_s,
        "per_image_loop_of_the_batched_core_s": per_image_s,
        "straightforward_per_image_per_token_loop_s": loop_s,
        "speedup_vs_per_image_loop": per_image_s / batched_s,
        "speedup_vs_straightforward_loop": loop_s / batched_s,
        "kept_tokens": {"mean": kept.mean().item(), "min": int(kept.min()), "max": int(kept.max())},
    }


@torch.inference_mode()
def prefill_latency(layers: int, repeats: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=32,
    )  # fmt: skip
    llm = LlamaForCausalLM(config).eval()
    rows = []
    for ratio in BUDGETS:
        visual = budget(576, ratio)
        length = TEXT_TOKENS + visual
        embeds = torch.randn(1, length, 4096) * 0.02
        seconds, _ = timed(
            lambda embeds=embeds: llm(inputs_embeds=embeds, use_cache=False, logits_to_keep=1), repeats
        )
        rows.append({"ratio": ratio, "visual_tokens": visual, "prompt_tokens": length, "prefill_s": seconds,
                     "flops": prefill_flops(llm, [length])[0]})  # fmt: skip
    full = rows[0]
    for row in rows:
        row["latency_ratio"] = row["prefill_s"] / full["prefill_s"]
        row["flops_ratio"] = row["flops"] / full["flops"]
    return {
        "setting": f"Llama, {layers} layers of width 4096 (MLP 11008, 32 heads), fp32, batch 1, "
        f"{TEXT_TOKENS} text tokens + the visual tokens, one next-token logit, CPU",
        "budgets": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="LLM layers at width 4096 (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="images per PruMerge batch (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default 3)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    result = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "prumerge": prumerge_cost(args.batch, args.repeats),
        "prefill": prefill_latency(args.layers, args.repeats),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
