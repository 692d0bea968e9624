"""The multimodal forward pass: splicing, masks, answer-only loss and batched greedy generation."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mmcompress.data.llava import IGNORE_INDEX, IMAGE_TOKEN, pad
from mmcompress.errors import UserError
from mmcompress.model.fusion import ChannelConcat
from mmcompress.model.llm import build_word_tokenizer
from mmcompress.model.multimodal import MultimodalLM
from mmcompress.model.projector import PROJECTORS
from mmcompress.pruning.methods import KeepAll
from mmcompress.vision.signals import ExpertTokens
from tests.conftest import tiny_llama

C, N = 12, 5  # expert channels, visual tokens


def tiny_model(seed: int = 0) -> MultimodalLM:
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(["what color is it ? red blue green yes no"])
    llm = tiny_llama(tokenizer)
    fusion = ChannelConcat({"x": C}, (1, N), OmegaConf.create({}))
    model = MultimodalLM({}, fusion, KeepAll(), PROJECTORS["mlp"](C, 32, 2), {}, llm, tokenizer)
    return model.eval()


def ids_of(model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_splice_places_visual_tokens_at_the_placeholder():
    model = tiny_model()
    rows = [ids_of(model, f"what {IMAGE_TOKEN} color is it ?"), ids_of(model, f"{IMAGE_TOKEN} what color")]
    input_ids = pad(rows, model.tokenizer.pad_token_id)
    mask = (torch.arange(input_ids.shape[1])[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    visual = torch.randn(2, N, 32)
    embeds, out_mask, positions, labels = model.splice(
        input_ids, mask, visual, torch.ones(2, N, dtype=torch.bool), input_ids.clone()
    )
    table = model.llm.get_input_embeddings().weight
    for row, text_ids in enumerate(rows):  # reference, one row at a time
        p = text_ids.index(model.image_token_id)
        expected = torch.cat([table[text_ids[:p]], visual[row], table[text_ids[p + 1 :]]])
        assert torch.allclose(embeds[row, : len(expected)], expected)
        assert out_mask[row, : len(expected)].all() and not out_mask[row, len(expected) :].any()
        assert positions[row, : len(expected)].tolist() == list(range(len(expected)))
        assert (labels[row, p : p + N] == IGNORE_INDEX).all()


def test_splice_requires_exactly_one_image_token():
    model = tiny_model()
    ids = torch.tensor([ids_of(model, "what color")])
    with pytest.raises(UserError, match="exactly one"):
        model.splice(ids, torch.ones_like(ids), torch.zeros(1, N, 32), torch.ones(1, N, dtype=torch.bool))


def test_loss_is_cross_entropy_on_answer_tokens_only():
    model = tiny_model()
    ids = torch.tensor([ids_of(model, f"what color {IMAGE_TOKEN} red </s>")])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, -2:] = ids[0, -2:]  # supervise "red </s>"
    features = {"x": ExpertTokens(torch.randn(1, N, C))}
    loss_sum, count = model(ids, torch.ones_like(ids), labels, features=features)

    visual, vmask = model.visual_tokens(features)
    embeds, mask, positions, _ = model.splice(ids, torch.ones_like(ids), visual, vmask)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    expected = F.cross_entropy(logits[0, -3:-1], ids[0, -2:], reduction="sum")
    assert count == 2
    assert torch.allclose(loss_sum, expected, atol=1e-5)


def test_zero_supervised_tokens_is_an_error():
    model = tiny_model()
    ids = torch.tensor([ids_of(model, f"what color {IMAGE_TOKEN} red")])
    with pytest.raises(UserError, match="no supervised"):
        model(
            ids,
            torch.ones_like(ids),
            torch.full_like(ids, IGNORE_INDEX),
            features={"x": ExpertTokens(torch.randn(1, N, C))},
        )


def _generate(model, prompts, features):
    ids = pad(prompts, model.tokenizer.pad_token_id, side="left")
    lengths = torch.tensor([len(p) for p in prompts])
    mask = (torch.arange(ids.shape[1])[None] >= (ids.shape[1] - lengths)[:, None]).long()
    return model.generate(ids, mask, features, max_new_tokens=6)


def test_batched_generation_equals_one_at_a_time():
    model = tiny_model(seed=3)
    prompts = [
        ids_of(model, f"what color is it ? {IMAGE_TOKEN}"),
        ids_of(model, f"{IMAGE_TOKEN} what"),
        ids_of(model, f"is it red or blue or green ? {IMAGE_TOKEN} yes"),
    ]
    features = {"x": ExpertTokens(torch.randn(3, N, C))}
    batched, counts = _generate(model, prompts, features)
    assert counts.tolist() == [N, N, N]
    for row, prompt in enumerate(prompts):
        alone, _ = _generate(model, [prompt], {"x": features["x"][row : row + 1]})
        width = alone.shape[1]
        assert batched[row, :width].tolist() == alone[0].tolist()


def test_cached_greedy_decoding_equals_recomputing_the_whole_sequence_without_a_cache():
    """The KV cache is passed the way transformers documents (no deprecation notice), and reusing it changes
    no answer: each step equals a full forward over the prompt and the tokens generated so far."""
    model = tiny_model(seed=5)
    prompts = [ids_of(model, f"what color is it ? {IMAGE_TOKEN}"), ids_of(model, f"{IMAGE_TOKEN} yes")]
    features = {"x": ExpertTokens(torch.randn(2, N, C))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a FutureWarning about past_key_values fails the test
        generated, _ = _generate(model, prompts, features)
    ids = pad(prompts, model.tokenizer.pad_token_id, side="left")
    lengths = torch.tensor([len(p) for p in prompts])
    text_mask = (torch.arange(ids.shape[1])[None] >= (ids.shape[1] - lengths)[:, None]).long()
    embeds, mask, positions, _ = model.splice(ids, text_mask, *model.visual_tokens(features))
    expected = []
    for _ in range(generated.shape[1]):
        with torch.no_grad():
            logits = model.llm(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
            ).logits  # (B, T, V): the whole sequence again
        next_ids = logits[:, -1].argmax(-1)  # (B,)
        expected.append(next_ids)
        embeds = torch.cat([embeds, model.llm.get_input_embeddings()(next_ids[:, None])], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        positions = torch.cat([positions, positions[:, -1:] + 1], 1)
    expected = torch.stack(expected, 1)  # (B, steps)
    eos = model.tokenizer.eos_token_id
    for row in range(2):  # after its EOS a row is padding in `generated`
        stop = (expected[row] == eos).nonzero()
        width = int(stop[0]) + 1 if len(stop) else expected.shape[1]
        assert generated[row, :width].tolist() == expected[row, :width].tolist()
    assert generated.shape[1] == 6 or (expected == eos).any(1).all()


class _KeepFirst(KeepAll):
    """Test pruner: keeps the first k tokens of each row (k differs per row) via the mask."""

    def __init__(self, keep: list[int]) -> None:
        super().__init__()
        self.keep = torch.tensor(keep)

    def forward(self, tokens, importance=None, keys=None, grid=None):
        mask = torch.arange(tokens.shape[1])[None] < self.keep[:, None]  # (B, N)
        return tokens, mask


def test_masked_visual_slots_never_change_the_logits():
    model = tiny_model(seed=1)
    model.pruner = _KeepFirst([2, 4])
    prompts = [ids_of(model, f"what color {IMAGE_TOKEN}"), ids_of(model, f"{IMAGE_TOKEN} is it red")]
    features = torch.randn(2, N, C)
    changed = features.clone()
    changed[0, 2:] = 100.0  # only masked slots differ
    changed[1, 4:] = -7.0
    first, counts = _generate(model, prompts, {"x": ExpertTokens(features)})
    second, _ = _generate(model, prompts, {"x": ExpertTokens(changed)})
    assert counts.tolist() == [2, 4]
    assert torch.equal(first, second)


def test_cell_positions_are_sin_and_cos_of_each_cells_row_and_column_centre():
    from mmcompress.model.projector import cell_positions

    table = cell_positions((2, 4), 2)  # (8, 8): per axis sin πv, sin 2πv, cos πv, cos 2πv; row, then column
    assert table.shape == (8, 8)
    y, x = 0.25, 0.625  # row 0, column 2: centres (0 + 0.5) / 2 and (2 + 0.5) / 4
    code = [torch.tensor([v, 2 * v]) * torch.pi for v in (y, x)]
    torch.testing.assert_close(table[2], torch.cat([part for c in code for part in (c.sin(), c.cos())]))
    assert len({tuple(row.tolist()) for row in table}) == 8  # every cell its own code


def test_position_channels_reach_the_projector_and_follow_the_kept_tokens():
    """projector.positions=F: each token gains its cell's 4F channels before pruning, so the tokens topk
    keeps carry their own cells' codes into the projector."""
    from mmcompress.model.projector import cell_positions
    from mmcompress.pruning.methods import PRUNERS

    model = tiny_model()
    model.fusion = ChannelConcat({"x": C + 8}, (1, N), OmegaConf.create({}))
    model.pruner = PRUNERS["topk"](OmegaConf.create({"name": "topk", "ratio": 0.4}))
    model.position_frequencies = 2
    seen = []
    model.projector = PROJECTORS["mlp"](C + 8, 32, 2)
    model.projector.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    importance = torch.tensor([[0.0, 0.9, 0.0, 0.8, 0.0]])  # keeps cells 1 and 3
    visual, mask = model.visual_tokens({"x": ExpertTokens(torch.randn(1, N, C), importance)})
    assert visual.shape == (1, 2, 32) and mask.all()
    torch.testing.assert_close(seen[0][0, :, C:], cell_positions((1, N), 2)[[1, 3]])


def test_positions_at_the_output_are_added_to_the_kept_tokens_after_the_projector():
    """position_at=output: the projector sees the plain channels; each kept token's cell code is added to
    the first 4F dimensions of its projected embedding, at the tokens' RMS."""
    from mmcompress.model.projector import cell_positions
    from mmcompress.pruning.methods import PRUNERS

    model = tiny_model()
    model.pruner = PRUNERS["topk"](OmegaConf.create({"name": "topk", "ratio": 0.4}))
    model.position_frequencies, model.position_at = 2, "output"
    importance = torch.tensor([[0.0, 0.9, 0.0, 0.8, 0.0]])  # keeps cells 1 and 3
    encoded = {"x": ExpertTokens(torch.randn(1, N, C), importance)}
    visual, _ = model.visual_tokens(encoded)
    model.position_frequencies = 0
    plain, _ = model.visual_tokens(encoded)  # (1, 2, 32)
    rms = plain.pow(2).mean().sqrt()
    torch.testing.assert_close(
        visual[..., :8] - plain[..., :8], rms * cell_positions((1, N), 2)[[1, 3]][None]
    )
    torch.testing.assert_close(visual[..., 8:], plain[..., 8:])
