"""Pruning signals: CLIP's CLS attention is the attention its last layer really computes (experts run sdpa,
the reference is the eager maps); other experts' importance; pooling onto the common grid; the feature
store keeps signals beside the features."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmcompress.errors import ConfigError
from mmcompress.model import features as store_module
from mmcompress.model.features import encode_images
from mmcompress.model.multimodal import encode_expert
from mmcompress.vision.expert import EXPERTS
from mmcompress.vision.families.clip import CLIPExpert
from mmcompress.vision.families.convnext import ConvNeXtExpert
from mmcompress.vision.families.dinov2 import DINOv2Expert
from mmcompress.vision.families.sam import SAMExpert
from mmcompress.vision.families.siglip import SigLIPExpert
from mmcompress.vision.signals import SignalSpec, check_native, cls_attention, token_importance
from tests.conftest import tiny_expert_checkpoint


@pytest.fixture
def clip(tmp_path):
    path = tiny_expert_checkpoint("clip", tmp_path / "clip")
    return CLIPExpert.from_pretrained("clip", str(path), {"select_layer": -2}).eval()


def _eager_last_attention(expert, pixels: torch.Tensor) -> torch.Tensor:
    """(B, heads, 1+n, 1+n) attention maps of the expert's last layer, from an eager copy of its model."""
    eager = type(expert.model).from_pretrained(expert.source, attn_implementation="eager").eval()
    return eager(pixel_values=pixels, output_attentions=True).attentions[-1]


def _pixels(expert, n: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    arrays = torch.randint(0, 256, (n, 32, 32, 3), generator=generator, dtype=torch.uint8).numpy()
    return expert.preprocess([Image.fromarray(a) for a in arrays])


def test_cls_attention_is_the_last_layers_own_attention_averaged_over_heads(clip):
    pixels = _pixels(clip)
    encoded = encode_expert(clip, pixels, SignalSpec())
    assert clip.model.config._attn_implementation == "sdpa"  # no attention maps to read
    expected = _eager_last_attention(clip, pixels)[:, :, 0, 1:].mean(1)  # (B, n): [CLS] row, head-averaged
    torch.testing.assert_close(encoded.importance, expected)
    torch.testing.assert_close(encoded.tokens, encode_expert(clip, pixels, None).tokens)  # the same forward
    assert encoded.keys.shape == (2, 16, 32)


def test_dinov2_cls_attention_is_its_last_layers_own_attention(tmp_path):
    path = tiny_expert_checkpoint("dinov2", tmp_path / "dinov2")
    dinov2 = DINOv2Expert.from_pretrained("dinov2", str(path), {"select_layer": None}).eval()
    pixels = _pixels(dinov2)
    encoded = encode_expert(dinov2, pixels, SignalSpec())
    assert dinov2.model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(encoded.importance, _eager_last_attention(dinov2, pixels)[:, :, 0, 1:].mean(1))
    assert encoded.keys.shape == (2, 16, 32)


def test_siglip_ranks_patches_by_its_pooling_heads_attention(tmp_path):
    """SigLIP has no [CLS]: its importance is the attention of the pooling head's probe over the patches,
    the same weights the head itself computes when it pools."""
    path = tiny_expert_checkpoint("siglip", tmp_path / "siglip")
    siglip = SigLIPExpert.from_pretrained("siglip", str(path), {"select_layer": None}).eval()
    pixels = _pixels(siglip)
    encoded = encode_expert(siglip, pixels, SignalSpec())
    final = siglip.model(pixel_values=pixels).last_hidden_state  # (B, 16, C): what the head attends to
    head = siglip.model.head
    probe = head.probe.expand(len(final), -1, -1)
    _, weights = head.attention(probe, final, final, need_weights=True, average_attn_weights=True)
    torch.testing.assert_close(encoded.importance, weights[:, 0])  # (B, 16), head-averaged
    assert SignalSpec().kind_for(siglip) == "cls" and siglip.summary_query == "pooling-head probe"


def test_single_softmax_is_the_softmax_of_sqrt_heads_times_the_mean_head_logit(clip):
    hidden = torch.randn(2, 17, 32)
    attention = clip.model.encoder.layers[-1].self_attn
    query, keys = attention.q_proj(hidden[:, :1]), attention.k_proj(hidden)
    single = cls_attention(query, keys, attention.num_heads, "single_softmax")
    heads, dim = attention.num_heads, attention.head_dim
    q = attention.q_proj(hidden[:, :1]).view(2, 1, heads, dim)
    k = attention.k_proj(hidden).view(2, 17, heads, dim)
    mean_logit = torch.einsum("bqhd,bkhd->bk", q, k) / heads / dim**0.5  # (B, 1+n)
    torch.testing.assert_close(single, (heads**0.5 * mean_logit).softmax(-1)[:, 1:])


def test_signals_are_pooled_onto_a_coarser_grid(clip):
    clip.place_on_grid((2, 2))
    encoded = encode_expert(clip, _pixels(clip), SignalSpec())
    assert encoded.importance.shape == (2, 4) and encoded.keys.shape == (2, 4, 32)
    # Area pooling keeps the attention mass: 4 native cells per grid cell, averaged.
    torch.testing.assert_close(encoded.importance.sum(1) * 4, torch.ones(2), atol=0.02, rtol=0.1)


def test_upsampled_experts_cannot_be_pruned(clip):
    clip.place_on_grid((8, 8))
    with pytest.raises(ConfigError, match="native tokens"):
        check_native(clip)


def test_experts_without_cls_use_the_signal_measured_best_for_them(tmp_path):
    sam = SAMExpert.from_pretrained("sam", str(tiny_expert_checkpoint("sam", tmp_path / "sam")), {})
    convnext = ConvNeXtExpert.from_pretrained(
        "convnext", str(tiny_expert_checkpoint("convnext", tmp_path / "cn")), {}
    )
    assert (SignalSpec().kind_for(sam), SignalSpec().kind_for(convnext)) == ("distinct", "norm")
    assert SignalSpec("norm").kind_for(sam) == "norm"  # an explicit choice wins
    with pytest.raises(ConfigError, match="no \\[CLS\\] token"):
        SignalSpec("cls").kind_for(sam)
    tokens = torch.tensor([[[1.0, 0], [1, 0], [1, 0], [0, 1]]])  # the odd one out is most distinct
    assert token_importance(tokens, "distinct").argmax().item() == 3
    assert token_importance(tokens * torch.tensor([[[1.0], [5], [1], [1]]]), "norm").argmax().item() == 1


def test_a_family_declaring_no_importance_is_a_config_error_not_a_guess(tmp_path):
    sam = SAMExpert.from_pretrained("sam", str(tiny_expert_checkpoint("sam", tmp_path / "sam")), {})

    class Undeclared(SAMExpert):
        importance_without_cls = None  # a family that says nothing about its tokens' importance

    silent = Undeclared(sam.name, sam.source, sam.model, sam.processor, sam.spec)
    with pytest.raises(ConfigError, match="declares no importance signal"):
        SignalSpec().kind_for(silent)
    assert SignalSpec("distinct").kind_for(silent) == "distinct"  # an explicit choice still works


def test_feature_store_keeps_signals_beside_features(clip, tmp_path, monkeypatch):
    paths = []
    for i, colour in enumerate(["red", "green"]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (32, 32), colour).save(paths[-1])
    store, spec = tmp_path / "store", SignalSpec()
    first = encode_images({"clip": clip}, paths, torch.device("cpu"), store, "test", spec)
    monkeypatch.setattr(store_module, "_encode", lambda *a, **k: pytest.fail("encoded again"))
    again = encode_images({"clip": clip}, paths, torch.device("cpu"), store, "test", spec)
    for field in ("tokens", "importance", "keys"):
        torch.testing.assert_close(getattr(again["clip"], field), getattr(first["clip"], field))
    other = SignalSpec(attention="single_softmax")  # another signal setting is not in the store yet
    with pytest.raises(pytest.fail.Exception, match="encoded again"):
        encode_images({"clip": clip}, paths, torch.device("cpu"), store, "test", other)


@pytest.mark.parametrize("family", ["clip", "dinov2", "siglip", "sam", "pix2struct", "convnext"])
def test_experts_load_with_the_fastest_attention_their_family_has(family, tmp_path):
    """sdpa wherever transformers implements it for the family (ConvNeXt has no attention: eager is all)."""
    path = tiny_expert_checkpoint(family, tmp_path / family)
    expert = EXPERTS[family].from_pretrained(family, str(path), {"select_layer": -1})
    expected = "sdpa" if type(expert.model)._supports_sdpa else "eager"
    assert expert.model.config._attn_implementation == expected
    assert expected == ("eager" if family == "convnext" else "sdpa")


def test_convnext_runs_channels_last_with_the_features_of_the_default_layout(tmp_path):
    """Its weights and input go channels-last (the faster layout, benchmarks/speedups.py); the numbers stay."""
    expert = ConvNeXtExpert.from_pretrained("convnext", str(tiny_expert_checkpoint("convnext", tmp_path)), {})
    conv = expert.model.embeddings.patch_embeddings.weight  # (C, 3, p, p)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    pixels = torch.randn(2, 3, *expert.input_size)  # (B, 3, H, W)
    fast = expert.patch_map(pixels).features  # (B, C, h, w)
    expert.model.to(memory_format=torch.contiguous_format)
    plain = expert.model(pixel_values=pixels, output_hidden_states=True).hidden_states[expert.stage]
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
