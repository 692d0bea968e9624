"""The AC score (Law of Vision Representation): rank vision representations without finetuning them all.

A (cross-modal alignment): a candidate's visual tokens after its align-stage projector, each matched to its
most similar token of a reference representation's (cosine), averaged over tokens and images.
C (correspondence): zero-shot keypoint transfer between image pairs on the candidate's grid features, PCK.
A degree-2 polynomial in min-max normalised (A, C) then predicts the benchmark score, and the AC policy
chooses which candidates to finetune so that the best is found after few full trainings.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmcompress.rundir import RunDir

A_DEFINITION = (
    "mean over images and over the candidate's visual tokens (after its align-stage projector, in LLM "
    "embedding space) of the max cosine similarity to any token of the reference, averaged over references"
)
C_DEFINITION = (
    "PCK: fraction of keypoints whose zero-shot transfer (nearest neighbour on the candidate's grid "
    "features, window soft-argmax) lands within alpha x the target's reference length, per pair, then mean"
)

# ---- A: cross-modal alignment -------------------------------------------------------------------------------


def a_score(
    candidate: torch.Tensor,
    reference: torch.Tensor,
    candidate_mask: torch.Tensor | None = None,
    reference_mask: torch.Tensor | None = None,
) -> float:
    """(n, T, D) candidate tokens against (n, T', D) reference tokens of the same n images; masks (n, T)
    mark the tokens fed (pruned runs pad)."""
    candidate = F.normalize(candidate.float(), dim=-1, eps=1e-10)
    reference = F.normalize(reference.float(), dim=-1, eps=1e-10)
    similarity = torch.bmm(candidate, reference.transpose(1, 2))  # (n, T, T')
    if reference_mask is not None:
        similarity = similarity.masked_fill(~reference_mask[:, None, :], -math.inf)
    best = similarity.amax(-1)  # (n, T): each token's best reference match
    if candidate_mask is None:
        return best.mean().item()
    per_image = (best * candidate_mask).sum(1) / candidate_mask.sum(1)
    return per_image.mean().item()


# ---- C: correspondence --------------------------------------------------------------------------------------


def transfer_keypoints(
    source: torch.Tensor,
    target: torch.Tensor,
    points: torch.Tensor,
    size: float,
    window: int = 3,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Where each source keypoint lands in the target, by feature matching.

    source, target: (B, H, W, C) grid features of images `size` pixels a side; points: (B, K, 2) source
    keypoints (x, y in pixels). The source feature is sampled bilinearly at each keypoint; its most similar
    target cell (cosine) is refined by a softmax(similarity / temperature)-weighted mean of the cell centres
    in a `window` x `window` neighbourhood (window 1: plain nearest neighbour). Returns (B, K, 2) pixels."""
    b, h, w, c = target.shape
    grid = (points / size * 2 - 1).unsqueeze(2)  # (B, K, 1, 2) in [-1, 1], x first
    sampled = F.grid_sample(source.permute(0, 3, 1, 2), grid, align_corners=False)  # (B, C, K, 1)
    queries = F.normalize(sampled.squeeze(-1).transpose(1, 2), dim=-1)  # (B, K, C)
    cells = F.normalize(target.reshape(b, h * w, c), dim=-1)  # (B, HW, C)
    similarity = torch.bmm(queries, cells.transpose(1, 2)).view(b, -1, h, w)  # (B, K, H, W)
    best = similarity.flatten(2).argmax(-1)  # (B, K)
    row, col = best // w, best % w
    offsets = torch.arange(window, device=target.device) - window // 2
    rows = row[..., None, None] + offsets[:, None]  # (B, K, window, 1)
    cols = col[..., None, None] + offsets[None, :]  # (B, K, 1, window)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (B, K, window, window)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).flatten(2)  # (B, K, window²)
    scores = similarity.flatten(2).gather(2, flat).masked_fill(~inside.flatten(2), -math.inf)
    weights = torch.softmax(scores / temperature, -1)  # (B, K, window²)
    centres_x = (flat % w + 0.5) * size / w
    centres_y = (flat // w + 0.5) * size / h
    return torch.stack([(weights * centres_x).sum(-1), (weights * centres_y).sum(-1)], -1)  # (B, K, 2)


def pck(
    predicted: torch.Tensor,
    truth: torch.Tensor,
    extent: torch.Tensor,
    alpha: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per pair, the fraction of (valid) keypoints within alpha x extent of the truth. (B, K, 2) → (B,)."""
    valid = torch.ones(predicted.shape[:2], dtype=torch.bool) if valid is None else valid
    hit = ((predicted - truth).norm(dim=-1) <= alpha * extent[:, None]) & valid
    return hit.sum(1) / valid.sum(1).clamp(min=1)


# ---- the fit ------------------------------------------------------------------------------------------------

FEATURE_SETS = {"AC": ("A", "C"), "A": ("A",), "C": ("C",)}


def minmax(values: Sequence[float]) -> np.ndarray:
    """Values mapped to [0, 1] across candidates (all 0 when they are all equal)."""
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def poly_features(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Degree-2 polynomial features: 1, each column, and every product of two ([1, A, C, A², AC, C²])."""
    columns = [np.asarray(c, dtype=np.float64) for c in columns]
    products = [columns[i] * columns[j] for i in range(len(columns)) for j in range(i, len(columns))]
    return np.stack([np.ones_like(columns[0]), *columns, *products], 1)


def fit(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares coefficients (the minimum-norm solution when there are fewer points than terms)."""
    return np.linalg.lstsq(features, y, rcond=None)[0]


def r2(y: np.ndarray, predicted: np.ndarray) -> float:
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - predicted) ** 2).sum() / total) if total > 0 else math.nan


def loo_predictions(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each point predicted by the fit on all the others."""
    keep = ~np.eye(len(y), dtype=bool)
    return np.array([features[i] @ fit(features[keep[i]], y[keep[i]]) for i in range(len(y))])


def fit_report(a: np.ndarray, c: np.ndarray, y: np.ndarray) -> dict:
    """R² and leave-one-out R² of the quadratic on (A, C), on A alone and on C alone, all min-max normalised."""
    columns = {"A": minmax(a), "C": minmax(c)}
    target = minmax(y)
    out = {}
    for name, used in FEATURE_SETS.items():
        features = poly_features([columns[k] for k in used])
        coefficients = fit(features, target)
        held_out = loo_predictions(features, target) if len(y) > features.shape[1] else None
        out[name] = {
            "r2": r2(target, features @ coefficients),
            "loo_r2": r2(target, held_out) if held_out is not None else math.nan,
            "loo_predicted": held_out.tolist() if held_out is not None else None,  # normalised units
            "terms": features.shape[1],
        }
    return out


# ---- the AC policy ------------------------------------------------------------------------------------------


def policy_trainings(
    a: np.ndarray, c: np.ndarray, y: np.ndarray, rng: np.random.Generator, top: int = 3
) -> int:
    """One trial of the AC policy: cover the normalised (A, C) square by 2×2 regions, then 4×4, …, training
    one random candidate of each region not yet covered (regions in random order); after each training
    from the second on, refit on the trained ones and rank all (trained by their score, the rest by the
    prediction). Returns the number of trainings when the true best first enters the top `top`."""
    a, c = minmax(a), minmax(c)
    features = poly_features([a, c])
    best, n = int(np.argmax(y)), len(y)
    trained: list[int] = []
    level = 1
    while len(trained) < n:
        region = regions(a, c, level)
        uncovered = [r for r in rng.permutation(np.unique(region)) if r not in region[trained]]
        if not uncovered and 2**level >= n:  # the rest share regions with trained ones: random order
            uncovered = [None] * (n - len(trained))
        for r in uncovered:
            members = [i for i in range(n) if i not in trained and (r is None or region[i] == r)]
            trained.append(int(rng.choice(members)))
            if len(trained) >= 2 and best in ranked_top(features, y, trained, top):
                return len(trained)
        level += 1
    return n


def regions(a: np.ndarray, c: np.ndarray, level: int) -> np.ndarray:
    """Each candidate's region of the normalised (A, C) square cut into 2^level × 2^level cells."""
    cells = 2**level
    return np.minimum((a * cells).astype(int), cells - 1) * cells + np.minimum(
        (c * cells).astype(int), cells - 1
    )


def ranked_top(features: np.ndarray, y: np.ndarray, trained: list[int], top: int) -> list[int]:
    """The `top` candidates by known score (trained) or predicted score (the rest)."""
    predicted = features @ fit(features[trained], y[trained])
    predicted[trained] = y[trained]
    return list(np.argsort(-predicted)[:top])


def random_trainings(y: np.ndarray, rng: np.random.Generator) -> int:
    """Random choice: trainings in a random order until the best has been trained."""
    return int(np.flatnonzero(rng.permutation(len(y)) == int(np.argmax(y)))[0]) + 1


def simulate(
    a: np.ndarray, c: np.ndarray, y: np.ndarray, trials: int = 1000, seed: int = 0, top: int = 3
) -> dict:
    """The AC policy against random choice over many trials: the chance of finding the best within 3
    trainings (policy: in the predicted top-3; random: trained) and the expected number of trainings."""
    rng = np.random.default_rng(seed)
    policy = np.array([policy_trainings(a, c, y, rng, top) for _ in range(trials)])
    chance = np.array([random_trainings(y, rng) for _ in range(trials)])
    n = len(y)
    return {
        "candidates": n,
        "trials": trials,
        "policy_success_within_3": float((policy <= 3).mean()),
        "policy_expected_trainings": float(policy.mean()),
        "random_success_within_3": float((chance <= 3).mean()),
        "random_success_within_3_exact": min(1.0, 3 / n),
        "random_expected_trainings": float(chance.mean()),
        "random_expected_trainings_exact": (n + 1) / 2,
        "policy_trainings_histogram": np.bincount(policy, minlength=n + 1)[1:].tolist(),
        "definition": f"policy: trainings until the true best is in the predicted top-{top} (refit on the "
        "trained after each, from the second); random: trainings in random order until the best is trained",
    }


# ---- `mmcompress ac`: candidates from configs, their scores, the fit and the next trainings ------------------


@dataclass
class Candidate:
    label: str  # the overrides that distinguish it
    overrides: list[str]
    run_path: Path
    a: float = math.nan
    c: float = math.nan
    c_strict: float = math.nan  # PCK@0.05
    score: float | None = None  # the benchmark score of its finished training
    predicted: float | None = None
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def projected_tokens(
    model, images: Sequence[Path], batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, M, D) visual tokens as the LLM receives them, and their (n, M) mask, for `images`."""
    from mmcompress.data.llava import open_image

    device = next(model.parameters()).device
    tokens, masks = [], []
    for lo in range(0, len(images), batch_size):
        pil = [open_image(p) for p in images[lo : lo + batch_size]]
        pixels = {name: e.preprocess(pil).to(device) for name, e in model.experts.items()}
        visual, mask = model.visual_tokens(model.encode_images(pixels))  # (B, M, D), (B, M)
        tokens.append(visual.float().cpu())
        masks.append(mask.cpu())
    return torch.cat(tokens), torch.cat(masks)


@torch.no_grad()
def grid_features(model, images: list) -> torch.Tensor:
    """(B, H, W, ΣC) features on the common grid: each expert's L2-normalised, then concatenated (as the
    law-of-vision code concatenates mixtures)."""
    device = next(model.parameters()).device
    pixels = {name: e.preprocess(images).to(device) for name, e in model.experts.items()}
    encoded = model.encode_images(pixels)
    fused = torch.cat([F.normalize(e.tokens.float(), dim=-1) for e in encoded.values()], -1)  # (B, N, ΣC)
    h, w = model.fusion.grid
    return fused.view(fused.shape[0], h, w, -1).cpu()


def c_scores(model, pairs: list, window: int = 3, batch_size: int = 32) -> dict:
    """PCK@0.10 and @0.05 of zero-shot keypoint transfer over `pairs`, overall and per transform."""
    per_pair = {0.10: [], 0.05: []}
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo : lo + batch_size]
        k = max(len(p.source_points) for p in chunk)
        points = torch.zeros(len(chunk), k, 2)
        truth = torch.zeros(len(chunk), k, 2)
        valid = torch.zeros(len(chunk), k, dtype=torch.bool)
        for i, p in enumerate(chunk):  # pairs carry different keypoint counts: pad and mask
            points[i, : len(p.source_points)] = torch.as_tensor(p.source_points)
            truth[i, : len(p.target_points)] = torch.as_tensor(p.target_points)
            valid[i, : len(p.source_points)] = True
        size = float(chunk[0].source.width)
        predicted = transfer_keypoints(
            grid_features(model, [p.source for p in chunk]),
            grid_features(model, [p.target for p in chunk]),
            points,
            size,
            window,
        )
        extent = torch.tensor([p.extent for p in chunk])
        for alpha in per_pair:
            per_pair[alpha].append(pck(predicted, truth, extent, alpha, valid))
    pcks = {alpha: torch.cat(v) for alpha, v in per_pair.items()}
    kinds = [p.kind for p in pairs]
    return {
        "pck@0.10": pcks[0.10].mean().item(),
        "pck@0.05": pcks[0.05].mean().item(),
        "pck@0.10_by_kind": {
            kind: pcks[0.10][[k == kind for k in kinds]].mean().item() for kind in sorted(set(kinds))
        },
    }


def _label(overrides: list[str], varying: set[str]) -> str:
    """The overrides that tell candidates apart, shortened: 'clip clip.input_size=48'."""
    label = " ".join(o for o in overrides if o.partition("=")[0] in varying) or "default"
    return label.replace("encoder.experts.", "").replace("encoder=", "")


def _aligned_run(overrides: list[str], extra_dirs) -> tuple:
    """The candidate's config and run directory, after running its stages up to align if they are missing
    (in the directory its full training uses, which later resumes from them)."""
    from mmcompress.config import load_config
    from mmcompress.errors import ConfigError
    from mmcompress.stages import run_directory, train, validate

    cfg = load_config(overrides, extra_dirs)
    validate(cfg)
    run = run_directory(cfg)
    if not run.stage_complete("align"):
        stages = [s for s in cfg.stages if s in ("prealign", "align")]
        if "align" not in stages:
            raise ConfigError(
                f"{' '.join(overrides)}: the A score reads the align-stage projector; keep align in stages"
            )
        align_only = [*overrides, f"stages=[{','.join(stages)}]"]
        train(load_config(align_only, extra_dirs), align_only)
    return cfg, run


def _trained_score(run, benchmark: str) -> float | None:
    summary = run.summary()
    if summary.get("status") != "complete" or not run.stage_complete("finetune"):
        return None
    return (summary.get("scores", {}).get(benchmark) or {}).get("overall")


def run_ac(
    overrides: list[str],
    references: list[str],
    *,
    images: int = 100,
    pairs: int = 100,
    spair: Path | None = None,
    window: int = 3,
    benchmark: str | None = None,
    policy: bool = False,
    trials: int = 1000,
    out: Path | None = None,
    candidates: Path | None = None,
    extra_dirs: Sequence[Path] = (),
) -> dict:
    """`mmcompress ac`: A and C for every candidate the sweep overrides expand to, the benchmark scores of
    those already trained, the fit, and (with `policy`) which candidates to train next. A and C are stored
    in each run's summary.json and reused while the images, pairs and references stay the same."""
    from mmcompress import data as datasets
    from mmcompress.config import load_config
    from mmcompress.data.llava import open_image
    from mmcompress.data.pairs import generated_pairs, load_spair
    from mmcompress.errors import ConfigError
    from mmcompress.stages import resolve_device
    from mmcompress.sweep import expand

    runs = []
    for group in _candidate_groups(candidates):
        runs += [run for run in expand([*overrides, *group], extra_dirs) if run not in runs]
    if len(runs) < 2:
        raise ConfigError(
            "mmcompress ac compares candidates: give at least two, e.g. encoder=clip,convnext,sam"
        )
    varying = {o.partition("=")[0] for run in runs for o in run if any(o not in other for other in runs)}
    candidates = []
    for run_overrides in runs:
        _, run = _aligned_run(run_overrides, extra_dirs)
        candidates.append(Candidate(_label(run_overrides, varying), run_overrides, run.path))
    base = load_config(runs[0], extra_dirs)
    benchmark = benchmark or base.data.name
    device = resolve_device(base.device)
    shared = [o for o in runs[0] if not o.startswith("encoder") and o.partition("=")[0] not in varying]
    reference_runs = [_aligned_run([*shared, f"encoder={r}"], extra_dirs) for r in references]

    image_paths = datasets.load(base, "val").images[:images]
    if spair is not None:
        pair_set, pair_source = load_spair(spair, "test", 256, limit=pairs), f"SPair-71k test ({spair})"
    else:
        size = open_image(image_paths[0]).width
        pair_set = generated_pairs(image_paths, pairs, size, seed=base.seed)
        pair_source = (
            f"{len(pair_set)} generated pairs of val images ({', '.join(sorted({p.kind for p in pair_set}))})"
        )
    key = {
        "images": len(image_paths),
        "pairs": pair_source,
        "window": window,
        "references": [str(r.path) for _, r in reference_runs],
    }
    reference_tokens: list = []  # computed on first need: a rerun with every A stored loads no reference
    for candidate in track(candidates, "A and C"):
        run = RunDir(candidate.run_path)
        stored = run.summary().get("ac", {})
        if stored.get("key") != key:
            if not reference_tokens:
                reference_tokens += [
                    projected_tokens(_align_model(c, r, device), image_paths) for c, r in reference_runs
                ]
            model = _align_model(load_config(candidate.overrides, extra_dirs), run, device)
            tokens, mask = projected_tokens(model, image_paths)
            correspondence = c_scores(model, pair_set, window)
            stored = {
                "a": float(np.mean([a_score(tokens, t, mask, m) for t, m in reference_tokens])),
                "c": correspondence["pck@0.10"],
                "c_pck05": correspondence["pck@0.05"],
                "c_by_kind": correspondence["pck@0.10_by_kind"],
                "key": key,
                "definition": {"a": A_DEFINITION, "c": C_DEFINITION + " (alpha 0.10; c_pck05: 0.05)"},
            }
            run.update_summary(ac=stored)
        candidate.a, candidate.c, candidate.c_strict = stored["a"], stored["c"], stored["c_pck05"]
        candidate.extra = stored["c_by_kind"]
        candidate.score = _trained_score(run, benchmark)
    result = _analyse(candidates, benchmark, policy, trials, base.seed)
    result |= {"key": key, "references": references, "definitions": {"a": A_DEFINITION, "c": C_DEFINITION}}
    digest = hashlib.sha1(json.dumps(runs).encode()).hexdigest()[:8]
    result["out"] = str(out or Path(base.paths.runs).expanduser() / base.name / "ac" / digest)
    write(result, Path(result["out"]))
    return result


def _candidate_groups(path: Path | None) -> list[list[str]]:
    """Candidate sweeps from a YAML list of override strings (each expanded on top of the shared
    overrides); one empty group without a file."""
    import shlex

    import yaml

    from mmcompress.errors import UserError

    if path is None:
        return [[]]
    try:
        groups = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(
            f"--candidates {path} cannot be read ({type(exc).__name__}); give a YAML list of override strings"
        ) from None
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups) or not groups:
        raise UserError(
            f"--candidates {path} must be a YAML list of override strings, e.g. - encoder=clip,sam"
        )
    return [shlex.split(g) for g in groups]


def _align_model(cfg, run, device):
    from mmcompress.assembly import load_model

    return load_model(cfg, run, until="align").to(device).eval()


def track(items: list, label: str):
    """`items`, with a progress bar."""
    from mmcompress.console import progress

    with progress() as bar:
        task = bar.add_task(label, total=len(items), info="")
        for item in items:
            yield item
            bar.update(task, advance=1)


def _analyse(candidates: list[Candidate], benchmark: str, policy: bool, trials: int, seed: int) -> dict:
    """Fit the trained candidates, predict the rest, and suggest what to train next."""
    a = np.array([c.a for c in candidates])
    c_ = np.array([c.c for c in candidates])
    trained = [i for i, c in enumerate(candidates) if c.score is not None]
    result: dict = {"benchmark": benchmark, "trained": len(trained), "candidates": []}
    if len(trained) >= 2:
        y = np.array([candidates[i].score for i in trained])
        features = poly_features([minmax(a), minmax(c_)])
        low, span = y.min(), y.max() - y.min()
        coefficients = fit(features[trained], (y - low) / span if span > 0 else y * 0)
        for candidate, value in zip(candidates, features @ coefficients, strict=True):
            candidate.predicted = float(low + value * span)
        result["fit"] = fit_report(a[trained], c_[trained], y) if len(trained) >= 3 else None
        result["underdetermined"] = len(trained) < features.shape[1]
    if len(trained) == len(candidates) and len(candidates) >= 4:
        result["policy_simulation"] = simulate(a, c_, np.array([c.score for c in candidates]), trials, seed)
    if policy:
        result["next"] = next_trainings(candidates, seed)
    result["candidates"] = [
        {
            "label": c.label,
            "run": str(c.run_path),
            "a": c.a,
            "c": c.c,
            "c_pck05": c.c_strict,
            "c_by_kind": c.extra,
            "score": c.score,
            "predicted": c.predicted,
        }
        for c in candidates
    ]
    return result


def next_trainings(candidates: list[Candidate], seed: int, top: int = 3) -> list[dict]:
    """The AC policy's next step: one candidate from each (A, C) region not yet covered by a trained one
    (the coarsest level with such regions), else the untrained among the predicted top `top`."""
    a, c = minmax([x.a for x in candidates]), minmax([x.c for x in candidates])
    trained = {i for i, x in enumerate(candidates) if x.score is not None}
    rng = np.random.default_rng(seed)
    level = 1
    while 2**level <= len(candidates):
        cells = 2**level
        region = regions(a, c, level)
        covered = {region[i] for i in trained}
        open_regions = [r for r in np.unique(region) if r not in covered]
        if open_regions:
            picks = [int(rng.choice(np.flatnonzero(region == r))) for r in open_regions]
            return [
                {
                    "label": candidates[i].label,
                    "why": f"A bin {r // cells + 1} of {cells}, C bin {r % cells + 1}: a region no trained candidate covers",
                }
                for i, r in zip(picks, open_regions, strict=True)
            ]
        level += 1
    ranked = sorted(
        (i for i in range(len(candidates)) if i not in trained and candidates[i].predicted is not None),
        key=lambda i: -candidates[i].predicted,
    )
    return [{"label": candidates[i].label, "why": "in the predicted top 3"} for i in ranked[:top]]


# ---- output -------------------------------------------------------------------------------------------------


def write(result: dict, out: Path) -> None:
    """ac.json (everything), ac.md (the table) and ac.png (the (A, C) plane and the fits)."""
    from mmcompress.rundir import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "ac.json", json.dumps(result, indent=2, default=float) + "\n")
    rows = ["| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    rows += ["| " + " | ".join(_cells(c)) + " |" for c in result["candidates"]]
    rows += ["", *_fit_lines(result)]
    atomic_write(out / "ac.md", "\n".join(rows) + "\n")
    from mmcompress.report import _png

    (out / "ac.png").write_bytes(_png(plot(result)))


COLUMNS = ("candidate", "A", "C (PCK@0.10)", "PCK@0.05", "score", "predicted")


def _cells(candidate: dict) -> list[str]:
    c = candidate
    return [
        c["label"],
        f"{c['a']:.4f}",
        f"{c['c']:.4f}",
        f"{c['c_pck05']:.4f}",
        _num(c["score"]),
        _num(c["predicted"]),
    ]


def _num(value, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _fit_lines(result: dict) -> list[str]:
    lines = []
    for name, f in (result.get("fit") or {}).items():
        lines.append(
            f"- {name}: R² {_num(f['r2'])}, leave-one-out R² {_num(f['loo_r2'])} ({f['terms']} terms)"
        )
    if result.get("underdetermined"):
        lines.append("- fewer trained candidates than the quadratic's 6 terms: the fit is underdetermined")
    sim = result.get("policy_simulation")
    if sim:
        lines.append(
            f"- AC policy over {sim['trials']} trials: the best is in the predicted top-3 within 3 trainings "
            f"{sim['policy_success_within_3']:.2f} of the time (random choice: "
            f"{sim['random_success_within_3_exact']:.2f}); expected trainings until found "
            f"{sim['policy_expected_trainings']:.2f} (random: {sim['random_expected_trainings_exact']:.1f})"
        )
    for step in result.get("next", []):
        lines.append(f"- train next: {step['label']} ({step['why']})")
    return lines


def print_result(result: dict) -> None:
    from rich.table import Table

    from mmcompress.console import console

    trained = f"{result['trained']} of {len(result['candidates'])} trained"
    table = Table(title=f"AC scores · {result['benchmark']} ({trained})")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for c in result["candidates"]:
        table.add_row(*_cells(c))
    console.print(table)
    for line in _fit_lines(result):
        console.print(line, highlight=False)
    console.print(f"written to {result['out']}: ac.json, ac.md, ac.png")


def plot(result: dict):
    """Left: candidates on the (A, C) plane coloured by score (trained: filled; the rest: predicted, open).
    Right: each trained candidate's score against its leave-one-out prediction by the AC, A and C fits."""
    from mmcompress.report import _pyplot

    plt = _pyplot()
    candidates = result["candidates"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    values = [c["score"] if c["score"] is not None else c["predicted"] for c in candidates]
    finite = [v for v in values if v is not None]
    norm = plt.Normalize(min(finite), max(finite)) if finite else None
    for c, value in zip(candidates, values, strict=True):
        colour = plt.cm.viridis(norm(value)) if value is not None and norm else "grey"
        filled = c["score"] is not None
        left.scatter(
            c["a"], c["c"], s=60, facecolors=colour if filled else "none", edgecolors=colour, linewidths=1.5
        )
        left.annotate(c["label"], (c["a"], c["c"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if norm:
        mappable = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
        fig.colorbar(mappable, ax=left, label=f"{result['benchmark']} score (open: predicted)")
    left.set(
        xlabel="A (alignment with the reference)",
        ylabel="C (PCK@0.10)",
        title="candidates on the (A, C) plane",
    )
    left.grid(alpha=0.3)
    fits = result.get("fit") or {}
    trained = [c for c in candidates if c["score"] is not None]
    if trained and any(f.get("loo_predicted") for f in fits.values()):
        y = np.array([c["score"] for c in trained])
        low, span = y.min(), (y.max() - y.min()) or 1.0
        for (name, f), marker in zip(fits.items(), "os^", strict=True):
            if f.get("loo_predicted"):
                predicted = low + np.array(f["loo_predicted"]) * span
                right.scatter(
                    y, predicted, marker=marker, label=f"{name}: LOO R² {_num(f['loo_r2'])}", alpha=0.8
                )
        right.plot([y.min(), y.max()], [y.min(), y.max()], "k--", lw=0.8)
        right.legend(fontsize=8)
    right.set(
        xlabel=f"{result['benchmark']} score (trained)",
        ylabel="leave-one-out prediction",
        title="each fit predicting a held-out candidate",
    )
    right.grid(alpha=0.3)
    return fig
