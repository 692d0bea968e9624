"""Mini experts pretrained in the synthetic world, so the default MLLM starts, like every real one, from
pretrained vision encoders. Each family's objective mirrors its real counterpart, so that mixtures show
real complementarity, as EAGLE's do:

- clip `dense`: the colour, shape and word under each patch (the measured default: the strongest patch
  features); `contrastive`: CLIP's image–caption InfoNCE against a small text tower over generated
  captions; `dense+contrastive`: both;
- convnext `attributes`: supervised image-level multi-label classification of the colours, shapes and
  words present (as ImageNet-supervised ConvNeXts), from the pooled map the MLLM reads;
- sam `masks`: the segment class under each patch (background, each shape, text) at a higher resolution:
  where things are and their outlines, blind to colour and to which word is written;
- pix2struct `reading`: the word under each patch, at its own variable resolution.

The expert trains through the same `VisionExpert` wrapper the MLLM uses (its own preprocessing and feature
selection), is saved with `save_pretrained` and loads through the same `from_pretrained` path as a real
checkpoint. Directories are named by a hash of the recipe: the default recipes' experts ship inside the
package (`mmcompress/weights/`, a few MB each, rebuilt with `mmcompress pretrain-expert NAME --ship`); any
other recipe is built once per machine into ${paths.cache}/experts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers as hf
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn

from mmcompress.console import console, progress
from mmcompress.data import synthvqa
from mmcompress.data.world import world_dir, world_spec
from mmcompress.encoders import EXPERTS, VisionExpert
from mmcompress.errors import ConfigError
from mmcompress.llm import build_word_tokenizer
from mmcompress.optim import scheduler
from mmcompress.registry import Registry
from mmcompress.versioning import source_digest

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights"
OBJECTIVES = {
    "clip": ("dense", "contrastive", "dense+contrastive"),
    "convnext": ("attributes",),
    "sam": ("masks",),
    "pix2struct": ("reading",),
}
_BACKGROUND_WEIGHT = 0.34  # an item covering more than ~25% of a patch labels it
_CHUNK = 256  # images per preprocessing / probing pass
MINI_ARCHITECTURES: Registry = Registry("mini expert family")


def mini_expert_dir(expert: DictConfig, cfg: DictConfig) -> Path:
    """Where the mini expert of this recipe lives (built there on first use)."""
    recipe = {
        "family": expert.family,
        "mini": OmegaConf.to_container(expert.mini, resolve=True),
        "select_layer": expert.get("select_layer"),
        "schedule": OmegaConf.to_container(cfg.pretrain, resolve=True),
        "world": world_spec(cfg).cache_key(),
        "code": source_digest(
            "pretrain.py",
            "optim.py",
            "encoders.py",
            "grid.py",
            *(("llm.py",) if "contrastive" in expert.mini.objective else ()),
        ),
    }
    key = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cfg.paths.cache).expanduser() / "experts" / f"{expert.family}-mini-{key}"


def ensure_mini_expert(expert: DictConfig, cfg: DictConfig, *, rebuild: bool = False) -> Path:
    """Return the mini expert's directory: shipped, cached, or pretrained now and cached."""
    out = mini_expert_dir(expert, cfg)
    shipped = SHIPPED_WEIGHTS / out.name
    if (shipped / "pretrain_metrics.json").is_file() and not rebuild:
        return shipped
    done = out / "pretrain_metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:  # one builder at a time (parallel sweeps)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and not rebuild:
            return out
        console.print(f"[bold]Pretraining the mini {expert.family} expert[/] (once per machine) → {out}")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with torch.random.fork_rng():  # a fresh build and a cached one leave the caller's RNG alike
            pretrain_expert(expert, cfg, tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


def ship(directory: Path) -> Path:
    """Copy a built mini expert into the package, so every install starts with it (developers only)."""
    target = SHIPPED_WEIGHTS / directory.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(directory, target)
    return target


def pretrain_expert(expert_cfg: DictConfig, cfg: DictConfig, out: Path) -> dict:
    """Pretrain a mini expert of `expert_cfg.family` on the world's train split and save it to `out`."""
    family, mini = expert_cfg.family, expert_cfg.mini
    if family not in OBJECTIVES:
        raise ConfigError(f"no mini-expert recipe for family '{family}'; families: {', '.join(OBJECTIVES)}")
    if mini.objective not in OBJECTIVES[family]:
        raise ConfigError(
            f"{family} mini.objective={mini.objective!r}; choose one of {', '.join(OBJECTIVES[family])}"
        )
    start = time.time()
    torch.manual_seed(cfg.world.seed)
    root, spec = world_dir(cfg), world_spec(cfg)
    model, processor = MINI_ARCHITECTURES[family](mini)
    expert_spec = {k: v for k, v in OmegaConf.to_container(expert_cfg, resolve=True).items() if k != "mini"}
    expert = EXPERTS[family](f"mini-{family}", "pretraining", model, processor, expert_spec)
    train, val = WorldScenes(root, "train"), WorldScenes(root, "val")
    objective = OBJECTIVE_HEADS[mini.objective](expert, train)
    train_inputs = _preprocess(expert, train)  # (n, ...) half precision: the whole split stays in memory
    params = [*expert.parameters(), *objective.parameters()]
    steps, batch = cfg.pretrain.steps, cfg.pretrain.batch_size
    optimizer = torch.optim.AdamW(params, lr=cfg.pretrain.lr, weight_decay=0.01)
    schedule = scheduler(optimizer, "cosine", steps, warmup_ratio=0.05)
    with progress() as bar:
        task = bar.add_task(f"pretrain {family} ({mini.objective})", total=steps, info="")
        for _ in range(steps):
            idx = torch.randint(len(train), (batch,))
            loss = objective.loss(train_inputs[idx].float(), idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            bar.update(task, advance=1, info=f"loss {loss.item():.3f}")

    val_objective = OBJECTIVE_HEADS[mini.objective](expert, val, heads_from=objective)
    metrics = {
        "family": family,
        "objective": mini.objective,
        "steps": steps,
        "batch_size": batch,
        "train_images": len(train),
        "input_size": list(expert.input_size),
        "native_grid": list(expert.native_grid),
        **val_objective.probe(_preprocess(expert, val)),
        "wall_time_s": round(time.time() - start, 1),
        "world": asdict(spec),
    }
    out.mkdir(parents=True, exist_ok=True)
    expert.save_pretrained(out)
    (out / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=2))
    console.print(
        f"mini {family} expert: "
        + ", ".join(
            f"{group} {k} {v:.3f}"
            for group in ("patch_accuracy", "image_accuracy")
            for k, v in metrics.get(group, {}).items()
            if v is not None
        )
        + f" ({metrics['wall_time_s']} s)"
    )
    return metrics


# ---- architectures: the family's own transformers model and image processor, built from `mini` --------------
@MINI_ARCHITECTURES.register("clip")
def _mini_clip(mini: DictConfig):
    config = hf.CLIPVisionConfig(
        hidden_size=mini.hidden_size,
        intermediate_size=4 * mini.hidden_size,
        num_hidden_layers=mini.layers,
        num_attention_heads=mini.heads,
        image_size=mini.image_size,
        patch_size=mini.patch_size,
    )
    size = mini.image_size
    processor = hf.CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return hf.CLIPVisionModel(config), processor


@MINI_ARCHITECTURES.register("convnext")
def _mini_convnext(mini: DictConfig):
    config = hf.ConvNextConfig(
        hidden_sizes=list(mini.hidden_sizes),
        depths=list(mini.depths),
        patch_size=mini.patch_size,
    )
    processor = hf.ConvNextImageProcessorPil(size={"shortest_edge": mini.image_size}, crop_pct=1.0)
    return hf.ConvNextModel(config), processor


@MINI_ARCHITECTURES.register("sam")
def _mini_sam(mini: DictConfig):
    config = hf.SamVisionConfig(
        hidden_size=mini.hidden_size,
        num_hidden_layers=mini.layers,
        num_attention_heads=mini.heads,
        mlp_dim=4 * mini.hidden_size,
        image_size=mini.image_size,
        patch_size=mini.patch_size,
        output_channels=mini.output_channels,
        window_size=mini.window_size,
        global_attn_indexes=list(mini.global_attn_indexes),
    )
    return hf.SamVisionModel(config), hf.SamImageProcessorPil()


@MINI_ARCHITECTURES.register("pix2struct")
def _mini_pix2struct(mini: DictConfig):
    patch = mini.patch_size
    config = hf.Pix2StructVisionConfig(
        hidden_size=mini.hidden_size,
        num_hidden_layers=mini.layers,
        num_attention_heads=mini.heads,
        d_kv=mini.hidden_size // mini.heads,
        d_ff=4 * mini.hidden_size,
        patch_embed_hidden_size=patch * patch * 3,
        seq_len=mini.max_patches,  # row/column id tables: a very wide image may have max_patches columns
        initializer_range=mini.initializer_range,
    )
    processor = hf.Pix2StructImageProcessorPil(
        patch_size={"height": patch, "width": patch}, max_patches=mini.max_patches
    )
    return hf.Pix2StructVisionModel(config), processor


# ---- objectives: heads on the expert's features, a loss on a batch and a probe on held-out images ----------
OBJECTIVE_HEADS: dict[str, type[_Objective]] = {}


def _register(name: str):
    def add(cls):
        OBJECTIVE_HEADS[name] = cls
        return cls

    return add


class _Objective(nn.Module):
    """Heads and labels for one objective; `heads_from` shares the heads of a trained one (for probing)."""

    def __init__(
        self, expert: VisionExpert, scenes: WorldScenes, heads_from: _Objective | None = None
    ) -> None:
        super().__init__()
        self.expert, self.scenes = [expert], scenes  # a list: the expert is not a submodule of the heads
        self.heads = heads_from.heads if heads_from is not None else self.build_heads(expert, scenes)

    def build_heads(self, expert: VisionExpert, scenes: WorldScenes) -> nn.ModuleDict: ...

    def loss(self, inputs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor: ...

    @torch.no_grad()
    def probe(self, inputs: torch.Tensor) -> dict: ...


class _PatchLabels(_Objective):
    """Classify what covers each patch of the expert's native map, one head per label kind."""

    kinds: tuple[str, ...] = ()
    items_only: tuple[str, ...] = ()  # kinds scored on item-covered patches only (rare labels: words)

    def build_heads(self, expert, scenes):
        return nn.ModuleDict({k: nn.Linear(expert.native_channels, scenes.classes[k]) for k in self.kinds})

    def __init__(self, expert, scenes, heads_from=None) -> None:
        super().__init__(expert, scenes, heads_from)
        self.labels = scenes.patch_labels(expert.native_grid, self.kinds)  # {kind: (n, h·w)}

    def patch_features(self, inputs: torch.Tensor) -> torch.Tensor:
        expert = self.expert[0]
        features = expert.patch_map(inputs).features  # (B, C, h, w)
        if tuple(features.shape[-2:]) != expert.native_grid:
            raise ConfigError(
                f"mini {expert.family}: a square world image gave a {tuple(features.shape[-2:])} map, not its "
                f"native {expert.native_grid}; adjust mini.max_patches / image_size"
            )
        return features.flatten(2).transpose(1, 2)  # (B, h·w, C)

    def loss(self, inputs, idx):
        patches = self.patch_features(inputs)
        return sum(
            F.cross_entropy(
                self.heads[k](patches).flatten(0, 1),
                self.labels[k][idx].flatten(),
                ignore_index=0 if k in self.items_only else -100,
            )
            for k in self.kinds
        )

    @torch.no_grad()
    def probe(self, inputs):
        """Per-patch accuracy on held-out images, over patches covered by an item only."""
        predictions = {k: [] for k in self.kinds}
        for lo in range(0, len(inputs), _CHUNK):
            patches = self.patch_features(inputs[lo : lo + _CHUNK].float())
            for k in self.kinds:
                predictions[k].append(self.heads[k](patches).argmax(-1))
        accuracy = {}
        for k in self.kinds:
            target, predicted = self.labels[k], torch.cat(predictions[k])  # (n, h·w)
            covered = target > 0
            accuracy[k] = (
                round((predicted == target)[covered].float().mean().item(), 4) if covered.any() else None
            )
        return {"patch_accuracy": accuracy}


@_register("dense")
class _Dense(_PatchLabels):
    kinds = ("color", "shape", "word")


@_register("masks")
class _Masks(_PatchLabels):
    kinds = ("shape",)  # the segment class: background, each shape, or text


@_register("reading")
class _Reading(_PatchLabels):
    """Where the text is (the segment class) and which word it spells, learned on text patches: words
    cover few patches, and a loss over all of them is won by always answering "no word"."""

    kinds = ("shape", "word")
    items_only = ("word",)


@_register("attributes")
class _Attributes(_Objective):
    """Which colours, shapes and words the image contains (multi-label), from the mean of the map the MLLM
    reads (the selected stage): at 600 steps colour sets were right for 0.97 of images, against 0.64 from
    the pooled last stage."""

    def build_heads(self, expert, scenes):
        return nn.ModuleDict({"present": nn.Linear(expert.native_channels, scenes.present.shape[1])})

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        pooled = self.expert[0].patch_map(inputs).features.mean((-2, -1))  # (B, C)
        return self.heads["present"](pooled)  # (B, A)

    def loss(self, inputs, idx):
        return F.binary_cross_entropy_with_logits(self.logits(inputs), self.scenes.present[idx].float())

    @torch.no_grad()
    def probe(self, inputs):
        """Per attribute group, the share of held-out images whose predicted set is exactly right."""
        predicted = torch.cat(
            [self.logits(inputs[lo : lo + _CHUNK].float()) > 0 for lo in range(0, len(inputs), _CHUNK)]
        )
        exact = {}
        for group, columns in self.scenes.attribute_groups.items():
            exact[group] = round(
                (predicted[:, columns] == self.scenes.present[:, columns]).all(1).float().mean().item(), 4
            )
        return {"image_accuracy": exact}


@_register("contrastive")
class _Contrastive(_Objective):
    """CLIP's symmetric image–caption InfoNCE against a small text tower (kept only during pretraining)."""

    def build_heads(self, expert, scenes):
        width = expert.native_channels
        tokenizer = build_word_tokenizer(scenes.captions)
        length = max(len(c.split()) for c in scenes.captions) + 4
        texts = tokenizer(scenes.captions, padding="max_length", max_length=length + 1)
        ids = torch.tensor(texts["input_ids"])  # (n, T), EOS appended below
        ids[torch.arange(len(ids)), torch.tensor(texts["attention_mask"]).sum(1)] = tokenizer.eos_token_id
        self.caption_ids, self.caption_mask = ids, ids != tokenizer.pad_token_id
        text = hf.CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=2,
            num_attention_heads=expert.model.config.num_attention_heads,
            max_position_embeddings=ids.shape[1],
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        return nn.ModuleDict(
            {
                "text": hf.CLIPTextModel(text),
                "visual_projection": nn.Linear(width, width, bias=False),
                "text_projection": nn.Linear(width, width, bias=False),
                "logit_scale": _Scalar(math.log(1 / 0.07)),
            }
        )

    def loss(self, inputs, idx):
        expert = self.expert[0]
        pooled = expert.model(pixel_values=inputs).pooler_output  # (B, C)
        image = F.normalize(self.heads["visual_projection"](pooled), dim=-1)  # (B, P)
        text_out = self.heads["text"](input_ids=self.caption_ids[idx], attention_mask=self.caption_mask[idx])
        text = F.normalize(self.heads["text_projection"](text_out.pooler_output), dim=-1)  # (B, P)
        logits = self.heads["logit_scale"].value.exp() * image @ text.T  # (B, B)
        target = torch.arange(len(idx))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    @torch.no_grad()
    def probe(self, inputs):
        return {}


@_register("dense+contrastive")
class _DenseAndContrastive(_Objective):
    """Both CLIP objectives summed."""

    def __init__(self, expert, scenes, heads_from=None) -> None:
        nn.Module.__init__(self)
        shared = heads_from.parts if heads_from is not None else (None, None)
        self.parts = nn.ModuleList(
            [_Dense(expert, scenes, shared[0]), _Contrastive(expert, scenes, shared[1])]
        )

    def loss(self, inputs, idx):
        return sum(part.loss(inputs, idx) for part in self.parts)

    @torch.no_grad()
    def probe(self, inputs):
        return {k: v for part in self.parts for k, v in part.probe(inputs).items()}


class _Scalar(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))


# ---- the world's images and their labels ------------------------------------------------------------------
class WorldScenes:
    """A split's images, per-pixel item masks and per-item colour / shape / word, plus captions."""

    def __init__(self, root: Path, split: str) -> None:
        scenes = json.loads((root / "scenes" / f"{split}.json").read_text())
        self.paths = [root / s["image"] for s in scenes]
        self.masks = torch.from_numpy(
            np.load(root / "scenes" / f"{split}_masks.npz")["masks"]
        ).long()  # (n, H, W)
        colors = {c: i + 1 for i, c in enumerate(synthvqa.COLORS)}
        shapes = {s: i + 1 for i, s in enumerate([*synthvqa.SHAPES, "word"])}
        words = {w: i + 1 for i, w in enumerate(synthvqa.WORDS)}
        max_items = 1 + max(len(s["items"]) for s in scenes)
        n = len(scenes)
        self.item_labels = {
            k: torch.zeros(n, max_items, dtype=torch.long) for k in ("color", "shape", "word")
        }
        for i, scene in enumerate(scenes):  # label lookup tables: row i, column j = items[j - 1]
            for j, it in enumerate(scene["items"], start=1):
                self.item_labels["color"][i, j] = colors.get(it.get("color"), 0)
                self.item_labels["shape"][i, j] = (
                    shapes["word"] if it["kind"] == "word" else shapes[it["shape"]]
                )
                self.item_labels["word"][i, j] = words.get(it.get("word"), 0)
        self.classes = {"color": len(colors) + 1, "shape": len(shapes) + 1, "word": len(words) + 1}
        # Image-level attributes: which colours, shapes (incl. text) and words appear, as multi-hot columns.
        present = [F.one_hot(t, self.classes[k])[:, :, 1:].amax(1) for k, t in self.item_labels.items()]
        self.present = torch.cat(present, dim=1).bool()  # (n, A)
        bounds = np.cumsum([0, *(self.classes[k] - 1 for k in self.item_labels)])
        self.attribute_groups = {
            k: list(range(bounds[i], bounds[i + 1])) for i, k in enumerate(self.item_labels)
        }
        self.captions = [s["caption"] for s in scenes]
        self.object_count = torch.tensor(
            [sum(it["kind"] != "word" for it in s["items"]) for s in scenes]
        )  # (n,)

    def __len__(self) -> int:
        return len(self.paths)

    def patch_labels(self, grid: tuple[int, int], kinds: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """{kind: (n, h·w)} label of the item covering most of each grid cell (0 = background)."""
        item = _patch_majority(self.masks, grid)  # (n, h·w): 0 = background, j = items[j - 1]
        return {k: self.item_labels[k].gather(1, item) for k in kinds}


def _preprocess(expert: VisionExpert, scenes: WorldScenes) -> torch.Tensor:
    """Every image of the split through the expert's own preprocessing, in half precision."""
    parts = []
    for lo in range(0, len(scenes), _CHUNK):
        images = [Image.open(p).convert("RGB") for p in scenes.paths[lo : lo + _CHUNK]]
        parts.append(expert.preprocess(images).half())
    return torch.cat(parts)


def _patch_majority(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(n, H, W) item ids → (n, h·w) the item covering most of each grid cell (background down-weighted)."""
    n, height, width = masks.shape
    rows, cols = grid
    if height % rows or width % cols:
        raise ConfigError(f"a {height}×{width} world image does not divide into a {rows}×{cols} patch grid")
    ph, pw = height // rows, width // cols
    blocks = masks.reshape(n, rows, ph, cols, pw).permute(0, 1, 3, 2, 4).reshape(n, rows * cols, ph * pw)
    counts = F.one_hot(blocks, int(masks.max()) + 1).sum(2).float()  # (n, h·w, items + 1)
    counts[..., 0] *= _BACKGROUND_WEIGHT
    return counts.argmax(-1)
