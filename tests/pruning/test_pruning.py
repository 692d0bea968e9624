"""Pruning: selection and merging on hand-computed cases, batched = per image, and what the LLM is fed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mmcompress.errors import ConfigError
from mmcompress.model.fusion import FUSIONS
from mmcompress.pruning.arrange import prune_experts, shared_signals
from mmcompress.pruning.methods import PRUNERS
from mmcompress.pruning.plan import budget, lattice
from mmcompress.pruning.prumerge import iqr_outliers, prumerge, prumerge_plan
from mmcompress.pruning.tome import tome_plan
from mmcompress.vision.signals import ExpertTokens
from tests.pruning.baselines_reference import divprune_loop, visionzip_loop
from tests.pruning.prumerge_reference import prumerge_loop


def pruner(name: str, **settings):
    return PRUNERS[name](OmegaConf.create({"name": name, **settings}))


# ---- hand-computed cases -------------------------------------------------------------------------------


def test_iqr_outliers_are_the_values_above_q3_plus_one_and_a_half_iqr():
    # Quartiles of 1..8 (linear interpolation): Q1 = 2.75, Q3 = 6.25, fence 6.25 + 1.5 · 3.5 = 11.5.
    values = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8], [1.0, 2, 3, 4, 5, 6, 12, 30]])
    # Second row: Q1 = 2.75, Q3 = 7.5, fence 14.625 → only 30 is an outlier.
    assert iqr_outliers(values).tolist() == [0, 1]
    assert iqr_outliers(values, pooled=True).tolist() == [2]  # all 16: Q1 2.75, Q3 6.25 → 12 and 30


def test_prumerge_keeps_the_outliers_and_averages_their_nearest_keys():
    # Token 5 is the only outlier; keys make tokens 1 and 2 its two nearest neighbours.
    attention = torch.tensor([[0.05, 0.1, 0.2, 0.05, 0.05, 0.5, 0.05, 0.0]])
    keys = torch.tensor([[[0.0, 1], [1, 0.1], [1, 0.2], [0, 1], [0, 1], [1, 0], [-1, 0], [-1, 0]]])
    features = torch.arange(8.0).repeat(3, 1).T[None]  # (1, 8, 3): token i carries value i
    tokens, mask = prumerge(features, keys, attention, k=2)
    expected = (0.5 * 5 + 0.1 * 1 + 0.2 * 2) / (0.5 + 0.1 + 0.2)  # attention-weighted average
    assert mask.tolist() == [[True]]
    torch.testing.assert_close(tokens[0, 0], torch.full((3,), expected))


def test_release_variant_adds_unnormalised_neighbours_and_one_token_pooling_the_pruned():
    attention = torch.tensor([[0.05, 0.1, 0.2, 0.05, 0.05, 0.5, 0.05, 0.0]])
    keys = torch.tensor([[[0.0, 1], [1, 0.1], [1, 0.2], [0, 1], [0, 1], [1, 0], [-1, 0], [-1, 0]]])
    features = torch.arange(8.0).repeat(3, 1).T[None]
    tokens, mask = prumerge(features, keys, attention, k=2, release=True)
    kept = 5 + 0.1 * 1 + 0.2 * 2
    pruned = sum(a * i for i, a in enumerate(attention[0].tolist()) if i != 5)
    assert mask.tolist() == [[True, True]]
    torch.testing.assert_close(tokens[0, :, 0], torch.tensor([kept, pruned]))


def test_tome_merges_the_most_similar_pairs_into_their_means():
    keys = torch.tensor([[[1.0, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]]])  # 0≈1 and 2≈3
    features = torch.tensor([[[1.0], [3.0], [10.0], [20.0]]])
    plan = tome_plan(keys, 2)
    torch.testing.assert_close(plan.apply(features), torch.tensor([[[2.0], [15.0]]]))


def test_lattice_has_exactly_the_budget_spread_over_the_grid():
    for count in (1, 7, 14, 28, 64, 128, 256):
        points = lattice((16, 16), count)
        assert len(points) == count == len(set(points.tolist()))
    rows = (lattice((16, 16), 16) // 16).unique()
    assert rows.tolist() == [2, 6, 10, 14]  # a 4×4 lattice with centred cells


@pytest.mark.parametrize("name", ["random", "spatial", "topk", "tome", "visionzip", "divprune"])
def test_fixed_budget_methods_keep_round_ratio_times_n(name):
    tokens, importance, keys = torch.randn(3, 256, 8), torch.rand(3, 256), torch.randn(3, 256, 5)
    for ratio, expected in ((0.5, 128), (0.25, 64), (0.11, 28), (0.055, 14)):
        kept, mask = pruner(name, ratio=ratio)(tokens, importance, keys, (16, 16))
        assert kept.shape[1] == expected == budget(256, ratio)
        assert mask.all()


def test_topk_keeps_the_most_important_tokens_in_grid_order():
    importance = torch.tensor([[0.1, 0.9, 0.2, 0.8]])
    tokens = torch.arange(4.0)[None, :, None]
    kept, _ = pruner("topk", ratio=0.5)(tokens, importance, None, (2, 2))
    assert kept.flatten().tolist() == [1.0, 3.0]


# ---- batched = per image -------------------------------------------------------------------------------


def _peaked(batch: int, tokens: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    attention = torch.rand(batch, tokens, generator=generator) ** 6
    return attention / attention.sum(1, keepdim=True)  # (B, N), a different outlier count per image


@pytest.mark.parametrize("plus", [False, True])
@pytest.mark.parametrize("variant", ["paper", "release"])
def test_batched_prumerge_equals_the_per_image_loop(plus, variant):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(4, 64, 6, generator=generator)
    keys = torch.randn(4, 64, 5, generator=generator)
    attention = _peaked(4, 64, 2)
    rows = range(4) if variant == "paper" else range(1)  # the release is defined at batch size 1
    if variant == "paper":
        tokens, mask = prumerge(features, keys, attention, plus=plus, k=4)
        assert len(set(mask.sum(1).tolist())) > 1, "the case should have different counts per image"
    for b in rows:
        alone, _ = prumerge(
            features[b : b + 1],
            keys[b : b + 1],
            attention[b : b + 1],
            plus=plus,
            release=variant == "release",
            k=4,
        )
        reference = prumerge_loop(
            features[b : b + 1], keys[b : b + 1], attention[b : b + 1], plus=plus, variant=variant, k=4
        )[0]
        torch.testing.assert_close(alone[0], reference.float(), atol=1e-5, rtol=1e-5)
        if variant == "paper":
            count = int(mask[b].sum())
            assert count == len(reference)
            torch.testing.assert_close(tokens[b, :count], alone[0])
            assert not tokens[b, count:].any()  # padding slots carry nothing


@pytest.mark.parametrize("release", [False, True])
def test_prumerge_plus_keeps_within_its_cap(release):
    """pruning.ratio caps what PruMerge+ keeps in all, outliers and lattice together (the release adds its
    one pooled token), and the lattice still uses the room the outliers leave."""
    generator = torch.Generator().manual_seed(3)
    attention, keys = _peaked(4, 256, 3), torch.randn(4, 256, 5, generator=generator)

    def kept(plus: bool, cap: int | None) -> torch.Tensor:
        plan = prumerge_plan(attention, keys, plus=plus, release=release, k=4, cap=cap, grid=(16, 16))
        return plan.mask.sum(1)  # (B,)

    uncapped = kept(True, None)
    for cap in (3, 14, 28):
        assert kept(True, cap).max() <= cap + release and (kept(True, cap) <= uncapped).all()
    assert uncapped.max() > 28  # the case needs the cap
    roomy = int(kept(False, None).max()) + 8  # room beyond the outliers: the lattice fills some of it
    assert (kept(True, roomy) > kept(False, roomy)).all() and kept(True, roomy).max() <= roomy + release


def test_visionzip_keeps_the_dominant_tokens_and_averages_the_rest_around_spread_targets():
    importance = torch.tensor([[0.0, 0.9, 0.0, 0.0, 0.8, 0.0]])  # tokens 1 and 4 dominate
    keys = torch.tensor([[[1.0, 0], [0, 1], [0, 1], [1, 0.1], [0, 1], [0.1, 1]]])
    features = torch.tensor([[[1.0], [2.0], [3.0], [5.0], [7.0], [11.0]]])
    plan = pruner("visionzip", ratio=4 / 6, contextual=0.5).plan(features, importance, keys, (2, 3))
    # rest 0, 2, 3, 5 → targets 0 and 3 (stride 2); 2 and 5 point along (0, 1), closer to 3's (1, 0.1)
    torch.testing.assert_close(plan.apply(features), torch.tensor([[[2.0], [7.0], [1.0], [19 / 3]]]))


@pytest.mark.parametrize("contextual", [0.0, 0.16, 0.5])
def test_batched_visionzip_equals_the_per_image_loop(contextual):
    generator = torch.Generator().manual_seed(3)
    features, keys = torch.randn(4, 64, 6, generator=generator), torch.randn(4, 64, 5, generator=generator)
    importance = _peaked(4, 64, 4)
    method = pruner("visionzip", ratio=0.25, contextual=contextual)
    kept, mask = method(features, importance, keys, (8, 8))
    assert mask.all() and kept.shape[1] == 16
    for b, reference in enumerate(visionzip_loop(features, importance, keys, 16, round(contextual * 16))):
        torch.testing.assert_close(kept[b], reference, atol=1e-5, rtol=1e-5)


def test_divprune_picks_the_most_spread_out_tokens():
    directions = torch.tensor([[[1.0, 0], [0.99, 0.14], [0, 1], [-1, 0], [0.98, -0.2]]])  # three near +x
    kept, _ = pruner("divprune", ratio=0.6)(directions, None, None, (1, 5))
    # -x first (farthest from its nearest neighbour), then +x (opposite), then +y; no second +x
    torch.testing.assert_close(kept[0], directions[0, [0, 2, 3]])


def test_batched_divprune_equals_the_per_image_loop():
    features = torch.randn(4, 49, 6, generator=torch.Generator().manual_seed(5))
    kept, mask = pruner("divprune", ratio=0.2)(features, None, None, (7, 7))
    assert mask.all() and kept.shape[1] == budget(49, 0.2)
    for b, positions in enumerate(divprune_loop(features, budget(49, 0.2))):
        torch.testing.assert_close(kept[b], features[b, positions])


def test_shared_selection_keeps_the_same_positions_in_every_expert():
    generator = torch.Generator().manual_seed(0)
    encoded = {
        name: ExpertTokens(
            torch.randn(2, 16, c, generator=generator),
            _peaked(2, 16, i),
            torch.randn(2, 16, 4, generator=generator),
        )
        for i, (name, c) in enumerate((("clip", 3), ("sam", 5)))
    }
    concat = FUSIONS["concat"]({"clip": 3, "sam": 5}, (4, 4), OmegaConf.create({}))
    kept, mask, _ = prune_experts(
        pruner("topk", ratio=0.25), encoded, shared=concat.aligned, grid=concat.grid
    )
    importance, _ = shared_signals(encoded)
    top = importance.topk(4).indices.sort(1).values  # (B, 4)
    for name, e in encoded.items():
        torch.testing.assert_close(
            kept[name], e.tokens.gather(1, top[..., None].expand(-1, -1, e.tokens.shape[-1]))
        )
    sequence = FUSIONS["sequence"]({"clip": 3, "sam": 5}, (4, 4), OmegaConf.create({"width": 8}))
    kept, mask, _ = prune_experts(
        pruner("topk", ratio=0.25), encoded, shared=sequence.aligned, grid=sequence.grid
    )
    assert mask.shape == (2, 8)  # each expert keeps its own 4
    own = encoded["sam"].importance.topk(4).indices.sort(1).values
    torch.testing.assert_close(kept["sam"], encoded["sam"].tokens.gather(1, own[..., None].expand(-1, -1, 5)))


@pytest.mark.parametrize("name", ["visionzip", "divprune"])
def test_baselines_prune_mixtures_with_one_selection_under_concat_and_their_own_under_sequence(name):
    generator = torch.Generator().manual_seed(7)
    encoded = {
        e: ExpertTokens(torch.randn(2, 16, c, generator=generator), _peaked(2, 16, i), torch.randn(2, 16, 4))
        for i, (e, c) in enumerate((("clip", 3), ("sam", 5)))
    }
    kept, mask, _ = prune_experts(
        pruner(name, ratio=0.25, contextual=0.25), encoded, shared=True, grid=(4, 4)
    )
    assert mask.shape == (2, 4) and kept["clip"].shape == (2, 4, 3) and kept["sam"].shape == (2, 4, 5)
    if name == "divprune":  # the selection reads every expert's features, and is the same cells in both
        every = torch.cat([F.normalize(e.tokens, dim=-1) for e in encoded.values()], -1)
        for b, positions in enumerate(divprune_loop(every, 4)):
            for e in encoded:
                torch.testing.assert_close(kept[e][b], encoded[e].tokens[b, positions])
    codes = torch.arange(16.0)[None, :, None].expand(2, -1, -1)  # (B, N, 1): each cell its index
    kept, mask, cells = prune_experts(
        pruner(name, ratio=0.25), encoded, shared=False, grid=(4, 4), cells=codes
    )
    assert mask.shape == (2, 8)  # each expert keeps its own 4
    if name == "divprune":  # unmerged: each kept token's code is its own cell's, in fused order
        for e, part in zip(encoded, cells.split(4, 1), strict=True):
            rows = encoded[e].tokens.gather(1, part.long().expand(-1, -1, encoded[e].tokens.shape[-1]))
            torch.testing.assert_close(kept[e], rows)


def test_bad_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"pruning\.ratio"):
        pruner("topk", ratio=1.5)
    with pytest.raises(ConfigError, match=r"set pruning\.ratio"):
        pruner("random")
    with pytest.raises(ConfigError, match=r"pruning\.contextual"):
        pruner("visionzip", ratio=0.25, contextual=1.0)
    with pytest.raises(ConfigError, match=r"pruning\.variant"):
        pruner("prumerge", variant="nope")
    with pytest.raises(ConfigError, match=r"pruning\.where"):
        pruner("prumerge", where="inside")


# ---- what the LLM is fed -------------------------------------------------------------------------------


def _pruned_model(pruning: str = "prumerge", **settings):
    from mmcompress.model.llm import build_word_tokenizer
    from mmcompress.model.multimodal import MultimodalLM
    from mmcompress.model.projector import PROJECTORS
    from tests.conftest import tiny_llama

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(["what color is it ? red blue green yes no"])
    fusion = FUSIONS["concat"]({"x": 6}, (4, 4), OmegaConf.create({}))
    model = MultimodalLM(
        {},
        fusion,
        pruner(pruning, **settings),
        PROJECTORS["mlp"](6, 32, 2),
        {},
        tiny_llama(tokenizer),
        tokenizer,
    )
    return model.eval()


def _encoded(batch: int = 3) -> dict[str, ExpertTokens]:
    generator = torch.Generator().manual_seed(5)
    return {
        "x": ExpertTokens(
            torch.randn(batch, 16, 6, generator=generator),
            _peaked(batch, 16, 3),
            torch.randn(batch, 16, 4, generator=generator),
        )
    }


def _prompts(model):
    from mmcompress.data.llava import IMAGE_TOKEN

    texts = [f"what color is it ? {IMAGE_TOKEN}", f"{IMAGE_TOKEN} what", f"is it red ? {IMAGE_TOKEN} yes"]
    return [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _last_logits(model, prompts, encoded):
    """Prefill logits at each prompt's last position, left-padded as evaluation batches them."""
    from mmcompress.data.llava import pad

    ids = pad(prompts, model.tokenizer.pad_token_id, side="left")
    lengths = torch.tensor([len(p) for p in prompts])
    mask = (torch.arange(ids.shape[1])[None] >= (ids.shape[1] - lengths)[:, None]).long()
    visual, visual_mask = model.visual_tokens(encoded)
    embeds, attention, positions, _ = model.splice(ids, mask, visual, visual_mask)
    logits = model.llm(inputs_embeds=embeds, attention_mask=attention, position_ids=positions).logits
    return logits[:, -1], visual_mask.sum(1)


@pytest.mark.parametrize("pruning", ["prumerge", "prumerge_plus"])
def test_batched_pruned_logits_equal_each_image_alone(pruning):
    model, encoded = _pruned_model(pruning, k=3), _encoded()
    prompts = _prompts(model)
    batched, counts = _last_logits(model, prompts, encoded)
    assert len(set(counts.tolist())) > 1  # different kept counts in one batch
    for b, prompt in enumerate(prompts):
        alone, _ = _last_logits(model, [prompt], {"x": encoded["x"][b : b + 1]})
        torch.testing.assert_close(batched[b], alone[0], atol=1e-5, rtol=1e-4)


class _NoisyPadding(torch.nn.Module):
    """Wraps a pruner and writes large values into its padded slots."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner, self.where, self.needs = inner, inner.where, inner.needs

    def forward(self, *args):
        tokens, mask = self.inner(*args)
        return tokens.masked_fill(~mask[..., None], 1e4), mask


def test_values_in_padded_slots_leave_the_logits_unchanged():
    model, encoded = _pruned_model(k=3), _encoded()
    prompts = _prompts(model)
    clean, counts = _last_logits(model, prompts, encoded)
    assert counts.min() < counts.max()  # some rows are padded
    model.pruner = _NoisyPadding(model.pruner)
    noisy, _ = _last_logits(model, prompts, encoded)
    torch.testing.assert_close(noisy, clean)


def test_pruned_models_feed_fewer_tokens_to_the_llm():
    """The length the LLM actually receives (its input embeddings and attended positions), not a count."""
    from mmcompress.data.llava import pad

    prefill = {}
    for pruning, settings in (("none", {}), ("prumerge", {"k": 3}), ("topk", {"ratio": 0.25})):
        model, seen = _pruned_model(pruning, **settings), []
        hook = model.llm.get_decoder().register_forward_pre_hook(
            lambda _m, _a, kw, seen=seen: seen.append(
                (kw["inputs_embeds"].shape[1], kw["attention_mask"].sum().item())
            ),
            with_kwargs=True,
        )
        ids = pad(_prompts(model)[:1], model.tokenizer.pad_token_id, side="left")
        _, counts = model.generate(ids, torch.ones_like(ids), _encoded(1), max_new_tokens=1)
        hook.remove()
        text = ids.shape[1] - 1  # the <image> placeholder becomes the visual tokens
        assert seen[0] == (text + int(counts[0]), text + int(counts[0]))  # the prefill call
        prefill[pruning] = seen[0][0] - text
    assert prefill["none"] == 16 and 1 <= prefill["prumerge"] < 16 and prefill["topk"] == 4


def test_prefill_flops_agree_with_the_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from mmcompress.evaluation.cost import prefill_flops

    llm = _pruned_model("none").llm
    for length in (5, 37, 70):
        with FlopCounterMode(display=False) as counter:
            llm(inputs_embeds=torch.zeros(1, length, 32), use_cache=False, logits_to_keep=1)
        assert prefill_flops(llm, [length]) == [counter.get_total_flops()]
