"""Vision experts: each family loads from a save_pretrained directory through the config path, runs
forward and lands on the common grid; the grid mappings are checked on known maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mmcompress.errors import ConfigError, UserError
from mmcompress.model.multimodal import encode_expert
from mmcompress.training.checks import validate
from mmcompress.vision.grid import PatchMap, to_grid
from tests.conftest import tiny_expert_checkpoint

# family → (conf/encoder option, overrides, native grid, native channels)
FAMILIES = {
    "clip": ("clip-l336", [], (4, 4), 32),
    "dinov2": ("dinov2-s", [], (4, 4), 32),
    "siglip": ("siglip-so400m", [], (4, 4), 32),
    "convnext": ("convnextv2-huge", ["encoder.experts.convnext.input_size=64"], (2, 2), 32),
    "sam": ("sam-l", [], (8, 8), 16),
    "pix2struct": ("pix2struct-large", ["encoder.experts.pix2struct.max_patches=64"], (8, 8), 32),
}


def _images(n: int = 3) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 48, 48, 3), generator=generator, dtype=torch.uint8).numpy()
    return [Image.fromarray(p) for p in pixels]


def _experts(compose, tmp_path, families, *extra):
    from mmcompress.model.build import load_experts

    overrides = [f"encoder={'+'.join(FAMILIES[f][0] for f in families)}", *extra]
    for family in families:
        checkpoint = tiny_expert_checkpoint(family, tmp_path / family)
        overrides += [f"encoder.experts.{family}.checkpoint={checkpoint}", *FAMILIES[family][1]]
    cfg = compose(*overrides)
    return cfg, load_experts(cfg, lambda name, expert: expert.checkpoint)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_loads_from_a_checkpoint_dir_and_runs_forward(compose, tmp_path, family):
    _, experts = _experts(compose, tmp_path, [family])
    expert = experts[family]
    assert (expert.native_grid, expert.native_channels) == FAMILIES[family][2:]
    tokens = encode_expert(expert, expert.preprocess(_images()), None).tokens
    rows, cols = expert.grid
    assert tokens.shape == (3, rows * cols, expert.channels) and torch.isfinite(tokens).all()
    described = expert.describe()
    assert described["input_size"] == list(expert.input_size) and described["family"] == family


def test_mixture_lands_every_expert_on_one_grid(compose, tmp_path):
    cfg, experts = _experts(
        compose, tmp_path, ["clip", "convnext", "sam", "pix2struct"], "grid=[4,4]",
        "encoder.experts.sam.to_grid=unshuffle",
    )  # fmt: skip
    assert cfg.choices.encoder == "clip-l336+convnextv2-huge+sam-l+pix2struct-large"
    assert list(experts) == ["clip", "convnext", "sam", "pix2struct"]
    channels = {name: e.channels for name, e in experts.items()}
    assert channels == {"clip": 32, "convnext": 32, "sam": 16 * 4, "pix2struct": 32}  # SAM: 8×8 → 4×4 ×4 ch
    for expert in experts.values():
        tokens = encode_expert(expert, expert.preprocess(_images(2)), None).tokens
        assert tokens.shape == (2, 16, expert.channels)


def test_clip_runs_at_another_resolution_by_interpolating_positions(compose, tmp_path):
    _, experts = _experts(compose, tmp_path, ["clip"], "encoder.experts.clip.input_size=64")
    clip = experts["clip"]
    pixels = clip.preprocess(_images(1))
    assert pixels.shape[-2:] == (64, 64) and clip.native_grid == (8, 8)
    assert encode_expert(clip, pixels, None).tokens.shape == (1, 64, 32)


def test_sam_gets_its_own_normalisation_not_clips(compose, tmp_path):
    _, experts = _experts(compose, tmp_path, ["clip", "sam"], "grid=[4,4]")
    gray = [Image.new("RGB", (32, 32), (128, 128, 128))]
    clip_value = experts["clip"].preprocess(gray)[0, 0, 0, 0].item()
    sam_value = experts["sam"].preprocess(gray)[0, 0, 0, 0].item()
    assert clip_value == pytest.approx((128 / 255 - 0.48145466) / 0.26862954, abs=1e-2)
    assert sam_value == pytest.approx((128 / 255 - 0.485) / 0.229, abs=1e-2)


def test_pix2struct_rebuilds_each_images_grid_from_row_and_column_ids(compose, tmp_path):
    _, experts = _experts(compose, tmp_path, ["pix2struct"])
    expert = experts["pix2struct"]
    wide, tall = Image.new("RGB", (96, 32), "red"), Image.new("RGB", (32, 64), "blue")
    patches = expert.preprocess([wide, tall])
    patch_map = expert.patch_map(patches)
    extents = patch_map.extent.tolist()
    assert extents[0][1] > extents[0][0] and extents[1][0] > extents[1][1]  # wide: more cols; tall: more rows
    alone = expert.patch_map(expert.preprocess([tall]))
    rows, cols = extents[1]
    torch.testing.assert_close(  # the padded batch gives the tall image the same map as on its own
        patch_map.features[1, :, :rows, :cols], alone.features[0, :, :rows, :cols], atol=1e-5, rtol=1e-4
    )


def test_grid_mappings_on_known_maps():
    features = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)  # (B, C, h, w)
    same = to_grid(PatchMap(features), (4, 4), "interpolate")
    torch.testing.assert_close(same, features.flatten(2).transpose(1, 2))
    unshuffled = to_grid(PatchMap(features), (2, 2), "unshuffle")
    assert unshuffled.shape == (2, 4, 12)
    torch.testing.assert_close(unshuffled[0, 0], features[0, :, :2, :2].reshape(3, 4).flatten())
    # A full extent resamples like F.interpolate; a partial one ignores the padding beyond it.
    full = to_grid(PatchMap(features, torch.tensor([[4, 4], [4, 4]])), (8, 8), "interpolate")
    expected = F.interpolate(features, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(full, expected.flatten(2).transpose(1, 2))
    padded = features.clone()
    padded[:, :, 2:, :] = 1e6  # rows 2–3 are padding for both images
    partial = to_grid(PatchMap(padded, torch.tensor([[2, 4], [2, 4]])), (2, 4), "interpolate")
    torch.testing.assert_close(partial, features[:, :, :2, :].flatten(2).transpose(1, 2))


def test_impossible_grids_and_unknown_experts_are_one_line_errors(compose, tmp_path):
    with pytest.raises(ConfigError, match="integer multiple"):
        _experts(compose, tmp_path, ["sam"], "grid=[3,3]", "encoder.experts.sam.to_grid=unshuffle")
    with pytest.raises(ConfigError, match=r"unknown encoder 'nope'; valid options: .*sam-l"):
        compose("encoder=clip+nope")
    with pytest.raises(ConfigError, match="same expert"):
        compose("encoder=clip+clip-l336")
    with pytest.raises(ConfigError, match="unknown expert family 'vit'"):
        _experts(compose, tmp_path, ["clip"], "encoder.experts.clip.family=vit")
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(ConfigError, match=f"encoder.experts.sam.checkpoint={missing} does not exist; give"):
        validate(compose("encoder=clip+sam", f"encoder.experts.sam.checkpoint={missing}"))


def test_a_checkpoint_of_another_model_is_an_error_not_random_weights(compose, tmp_path):
    from mmcompress.model.build import load_experts

    clip_dir = tiny_expert_checkpoint("clip", tmp_path / "clip")
    cfg = compose("encoder=sam-l", f"encoder.experts.sam.checkpoint={clip_dir}")
    with pytest.raises(UserError, match="sam expert 'sam'"):
        load_experts(cfg, lambda name, expert: expert.checkpoint)


def test_a_clip_config_without_select_layer_is_a_one_line_error(compose, tmp_path):
    """The layer the MLLM reads has no hidden code default: every clip config names it."""
    _, experts = _experts(compose, tmp_path, ["clip"])
    clip = experts["clip"]
    del clip.spec["select_layer"]
    with pytest.raises(ConfigError, match=r"encoder\.experts\.clip\.select_layer is not set"):
        encode_expert(clip, clip.preprocess(_images(1)), None)


@pytest.mark.parametrize("family", ["dinov2", "siglip"])
def test_dinov2_and_siglip_run_at_another_resolution(compose, tmp_path, family):
    """Position embeddings are interpolated: a 48 px input on a 32 px checkpoint gives a 6×6 map."""
    _, experts = _experts(compose, tmp_path, [family], f"encoder.experts.{family}.input_size=48")
    expert = experts[family]
    pixels = expert.preprocess(_images(2))
    assert pixels.shape[-2:] == (48, 48) and expert.native_grid == (6, 6)
    assert encode_expert(expert, pixels, None).tokens.shape == (2, 36, 32)


def test_a_dinov2_input_off_its_patch_is_a_one_line_error(compose, tmp_path):
    with pytest.raises(ConfigError, match=r"not a multiple of DINOv2's 8 px patch; give e\.g\. 48"):
        _experts(compose, tmp_path, ["dinov2"], "encoder.experts.dinov2.input_size=50")
