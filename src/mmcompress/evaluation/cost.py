"""What answering costs: visual tokens fed to the LLM, and forward FLOPs per question (whole model, and the
LLM prefill with the visual tokens actually fed against the unpruned count)."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmcompress.data.benchmarks import EvalSet
from mmcompress.data.llava import encode_prompts, open_image
from mmcompress.model.multimodal import MultimodalLM


def token_stats(counts: torch.Tensor) -> dict:
    counts = counts.double()
    return {
        "mean": counts.mean().item(),
        "min": int(counts.min()),
        "max": int(counts.max()),
        "definition": "visual tokens fed to the LLM per image",
    }


@torch.no_grad()
def question_flops(model: MultimodalLM, evalset: EvalSet) -> dict:
    """Forward FLOPs to answer one question: encode its image, project, and prefill the prompt."""
    question = evalset.questions[0]
    device = next(model.parameters()).device
    image = open_image(evalset.images[question.image])
    pixels = {n: e.preprocess([image]).to(device) for n, e in model.experts.items()}
    ids = torch.tensor([encode_prompts([question], model.tokenizer)[0]], device=device)  # (1, L)
    with FlopCounterMode(display=False) as counter:
        model.generate(ids, torch.ones_like(ids), model.encode_images(pixels), max_new_tokens=1)
    return {
        "per_question": counter.get_total_flops(),
        "definition": "forward FLOPs (a multiply-add counts 2) to encode the image, project its tokens and "
        "prefill the prompt of one question, batch 1; counted by torch.utils.flop_counter",
    }


@torch.no_grad()
def prefill_flops(llm, lengths: list[int]) -> list[int]:
    """LLM prefill FLOPs of a batch-1 prompt of each length (one next-token logit).

    Linear layers cost ∝ L and attention ∝ L², so the count is exactly a quadratic in L: three forwards
    under torch.utils.flop_counter fix it, and every length follows without running the LLM again."""
    width = llm.get_input_embeddings().weight
    points = (8, 16, 24)
    counted = []
    for length in points:
        embeds = width.new_zeros(1, length, width.shape[1])  # (1, L, D)
        with FlopCounterMode(display=False) as counter:
            llm(inputs_embeds=embeds, use_cache=False, logits_to_keep=1)
        counted.append(counter.get_total_flops())

    def at(length: int) -> int:  # Lagrange interpolation through the three counted points
        total = Fraction(0)
        for i, (xi, yi) in enumerate(zip(points, counted, strict=True)):
            term = Fraction(yi)
            for j, xj in enumerate(points):
                if j != i:
                    term *= Fraction(length - xj, xi - xj)
            total += term
        return int(total)

    return [at(length) for length in lengths]


def prefill_flops_summary(model: MultimodalLM, evalset: EvalSet, records: list[dict]) -> dict:
    """Prefill FLOPs per question with the visual tokens actually fed, and with the unpruned count."""
    prompts = encode_prompts(evalset.questions, model.tokenizer)  # records are in question order
    text = [len(p) - 1 for p in prompts]  # the <image> placeholder is replaced by the visual tokens
    full = math.prod(model.fusion.token_grid)
    fed = prefill_flops(model.llm, [t + r["visual_tokens"] for t, r in zip(text, records, strict=True)])
    unpruned = prefill_flops(model.llm, [t + full for t in text])
    mean, unpruned_mean = sum(fed) / len(fed), sum(unpruned) / len(unpruned)
    return {
        "mean": mean,
        "min": min(fed),
        "max": max(fed),
        "unpruned_mean": unpruned_mean,
        "ratio": mean / unpruned_mean,
        "definition": "forward FLOPs of the LLM prefill (prompt with its visual tokens, batch 1, one "
        "next-token logit) per evaluated question, from torch.utils.flop_counter; unpruned: the same "
        f"prompts with all {full} fused visual tokens",
    }
