"""Mini experts pretrained in the synthetic world, so the default MLLM starts, like every real one, from a
pretrained vision encoder. Objectives mirror real counterparts:

- `dense`: per-patch classification of the colour, shape and word under each patch (the generator knows
  them) — a stand-in for dense/segmentation-style pretraining; it gives the strongest patch features;
- `contrastive`: CLIP's image–caption InfoNCE against a small text tower over generated captions;
- `dense+contrastive`: both losses summed.

The result is saved with `save_pretrained` and loaded through the same `from_pretrained` path as a
real checkpoint. Directories are named by a hash of the recipe: the default recipe's expert ships inside
the package (`mmcompress/weights/`, ~3 MB, rebuilt with `mmcompress pretrain-expert clip --ship`); any
other recipe is built once per machine into ${paths.cache}/experts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from mmcompress.console import console, progress
from mmcompress.data import synthvqa
from mmcompress.data.world import world_dir, world_spec
from mmcompress.errors import ConfigError
from mmcompress.llm import build_word_tokenizer
from mmcompress.optim import scheduler
from mmcompress.versioning import source_digest

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights"
OBJECTIVES = ("dense", "contrastive", "dense+contrastive")
_BACKGROUND_WEIGHT = 0.34  # an item covering more than ~25% of a patch labels it


def mini_expert_dir(expert: DictConfig, cfg: DictConfig) -> Path:
    """Where the mini expert of this recipe lives (built there on first use)."""
    recipe = {
        "family": expert.family,
        "mini": OmegaConf.to_container(expert.mini, resolve=True),
        "select_layer": expert.select_layer,
        "schedule": OmegaConf.to_container(cfg.pretrain, resolve=True),
        "world": world_spec(cfg).cache_key(),
        "code": source_digest(
            "pretrain.py", "optim.py", *(("llm.py",) if "contrastive" in expert.mini.objective else ())
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


def pretrain_expert(expert: DictConfig, cfg: DictConfig, out: Path) -> dict:
    """Pretrain a mini expert of `expert.family` on the world's train split and save it to `out`."""
    if expert.family != "clip":
        raise ConfigError(f"no mini-expert recipe for family '{expert.family}'")
    mini = expert.mini
    if mini.objective not in OBJECTIVES:
        raise ConfigError(f"mini.objective={mini.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    start = time.time()
    torch.manual_seed(cfg.world.seed)
    root = world_dir(cfg)
    spec = world_spec(cfg)
    train, val = _PatchData(root, "train", mini.patch_size), _PatchData(root, "val", mini.patch_size)
    vision = CLIPVisionConfig(
        hidden_size=mini.hidden_size,
        intermediate_size=4 * mini.hidden_size,
        num_hidden_layers=mini.layers,
        num_attention_heads=mini.heads,
        image_size=spec.image_size,
        patch_size=mini.patch_size,
    )
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    mean = torch.tensor(processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_std)[:, None, None]
    tokenizer = build_word_tokenizer(train.captions)
    texts = tokenizer(train.captions, padding="max_length", max_length=train.caption_length + 1)
    caption_ids = torch.tensor(texts["input_ids"])  # (n, T) ids, EOS appended below
    caption_ids[torch.arange(len(caption_ids)), torch.tensor(texts["attention_mask"]).sum(1)] = (
        tokenizer.eos_token_id
    )
    caption_mask = caption_ids != tokenizer.pad_token_id
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=mini.hidden_size,
        intermediate_size=4 * mini.hidden_size,
        num_hidden_layers=2,
        num_attention_heads=mini.heads,
        max_position_embeddings=caption_ids.shape[1],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    clip = CLIPModel(
        CLIPConfig(
            text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=mini.hidden_size
        )
    )
    heads = nn.ModuleDict({k: nn.Linear(mini.hidden_size, n) for k, n in train.classes.items()})
    use_dense, use_contrastive = "dense" in mini.objective, "contrastive" in mini.objective
    params = [*clip.vision_model.parameters(), *heads.parameters()]
    if use_contrastive:
        params += [
            *clip.text_model.parameters(),
            *clip.visual_projection.parameters(),
            *clip.text_projection.parameters(),
            clip.logit_scale,
        ]
    steps, batch = cfg.pretrain.steps, cfg.pretrain.batch_size
    optimizer = torch.optim.AdamW(params, lr=cfg.pretrain.lr, weight_decay=0.01)
    schedule = scheduler(optimizer, "cosine", steps, warmup_ratio=0.05)
    layer = expert.select_layer
    with progress() as bar:
        task = bar.add_task(f"pretrain {expert.family} ({mini.objective})", total=steps, info="")
        for _ in range(steps):
            idx = torch.randint(len(train), (batch,))
            pixels = (train.images[idx].float() / 255 - mean) / std  # (b, 3, H, W)
            seen = clip.vision_model(pixel_values=pixels, output_hidden_states=True)
            loss = torch.zeros(())
            if use_dense:
                patches = seen.hidden_states[layer][:, 1:]  # (b, N, C)
                loss = loss + sum(
                    F.cross_entropy(heads[k](patches).flatten(0, 1), train.labels[k][idx].flatten())
                    for k in heads
                )
            if use_contrastive:
                image_emb = F.normalize(clip.visual_projection(seen.pooler_output), dim=-1)  # (b, P)
                text_out = clip.text_model(input_ids=caption_ids[idx], attention_mask=caption_mask[idx])
                text_emb = F.normalize(clip.text_projection(text_out.pooler_output), dim=-1)  # (b, P)
                logits = clip.logit_scale.exp() * image_emb @ text_emb.T  # (b, b)
                target = torch.arange(batch)
                loss = loss + (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            bar.update(task, advance=1, info=f"loss {loss.item():.3f}")

    model = CLIPVisionModel(vision)
    model.load_state_dict(clip.vision_model.state_dict())
    metrics = {
        "family": expert.family,
        "objective": mini.objective,
        "steps": steps,
        "batch_size": batch,
        "train_images": len(train),
        **_probe(clip, heads, val, mean, std, layer),
        "wall_time_s": round(time.time() - start, 1),
        "world": asdict(spec),
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=2))
    console.print(
        "mini expert: per-patch accuracy "
        + ", ".join(f"{k} {v:.3f}" for k, v in metrics["patch_accuracy"].items())
        + f" ({metrics['wall_time_s']} s)"
    )
    return metrics


@torch.no_grad()
def _probe(clip: CLIPModel, heads: nn.ModuleDict, val: _PatchData, mean, std, layer: int) -> dict:
    """Per-patch accuracy of the dense heads on held-out images (patches covered by an item only)."""
    pixels = (val.images.float() / 255 - mean) / std
    patches = clip.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[layer][:, 1:]
    accuracy = {}
    for name, head in heads.items():
        target = val.labels[name]  # (n, N)
        covered = target > 0
        correct = head(patches).argmax(-1) == target
        accuracy[name] = round(correct[covered].float().mean().item(), 4) if covered.any() else None
    return {"patch_accuracy": accuracy}


class _PatchData:
    """A split's images as one uint8 tensor plus per-patch colour / shape / word labels from its masks."""

    def __init__(self, root: Path, split: str, patch: int) -> None:
        scenes = json.loads((root / "scenes" / f"{split}.json").read_text())
        self.images = torch.from_numpy(
            np.stack([np.asarray(Image.open(root / s["image"]).convert("RGB")) for s in scenes])
        ).permute(0, 3, 1, 2)  # (n, 3, H, W) uint8
        masks = torch.from_numpy(np.load(root / "scenes" / f"{split}_masks.npz")["masks"]).long()  # (n, H, W)
        n = masks.shape[0]
        item = _patch_majority(masks, patch)  # (n, N): 0 = background, i + 1 = items[i]
        max_items = 1 + max(len(s["items"]) for s in scenes)
        colors = {c: i + 1 for i, c in enumerate(synthvqa.COLORS)}
        shapes = {s: i + 1 for i, s in enumerate([*synthvqa.SHAPES, "word"])}
        words = {w: i + 1 for i, w in enumerate(synthvqa.WORDS)}
        tables = {k: torch.zeros(n, max_items, dtype=torch.long) for k in ("color", "shape", "word")}
        for i, scene in enumerate(scenes):  # label lookup tables, built once per split
            for j, it in enumerate(scene["items"], start=1):
                tables["color"][i, j] = colors.get(it.get("color"), 0)
                tables["shape"][i, j] = shapes["word"] if it["kind"] == "word" else shapes[it["shape"]]
                tables["word"][i, j] = words.get(it.get("word"), 0)
        self.labels = {k: t.gather(1, item) for k, t in tables.items()}  # (n, N) each
        self.classes = {"color": len(colors) + 1, "shape": len(shapes) + 1, "word": len(words) + 1}
        self.captions = [s["caption"] for s in scenes]
        self.caption_length = max(len(c.split()) for c in self.captions) + 4

    def __len__(self) -> int:
        return len(self.images)


def _patch_majority(masks: torch.Tensor, patch: int) -> torch.Tensor:
    """(n, H, W) item ids → (n, N) the item covering most of each patch (background down-weighted)."""
    n, height, width = masks.shape
    blocks = masks.reshape(n, height // patch, patch, width // patch, patch).permute(0, 1, 3, 2, 4)
    blocks = blocks.reshape(n, -1, patch * patch)  # (n, N, p²)
    counts = F.one_hot(blocks, int(masks.max()) + 1).sum(2).float()  # (n, N, items + 1)
    counts[..., 0] *= _BACKGROUND_WEIGHT
    return counts.argmax(-1)
