"""`mmcompress ac`: candidates from sweep overrides, their A and C scores (stored in each run's summary and
reused while the images, pairs and references stay the same), the benchmark scores of those already
trained, the fit, and which candidates to train next."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from mmcompress.analysis.ac.fit import (
    FORMS,
    choose_form,
    fit,
    fit_report,
    minmax,
    poly_features,
    regions,
    simulate,
)
from mmcompress.analysis.ac.output import write
from mmcompress.analysis.ac.pairs import KeypointPair, generated_pairs, load_spair
from mmcompress.analysis.ac.scores import A_DEFINITION, C_DEFINITION, a_score, c_scores, projected_tokens
from mmcompress.analysis.significance import Estimate
from mmcompress.analysis.sweep import expand
from mmcompress.config import load_config
from mmcompress.console import progress
from mmcompress.data import splits
from mmcompress.data.llava import open_image
from mmcompress.errors import ConfigError, UserError
from mmcompress.model.build import load_model, resolve_device
from mmcompress.rundir import RunDir
from mmcompress.training.checks import validate
from mmcompress.training.run import run_directory, train


@dataclass
class Candidate:
    """One representation: its runs (one per seed) and their A, C and benchmark score, each the mean over
    the seeds; the score only once every seed's training has finished."""

    label: str  # the overrides that distinguish it
    overrides: list[str]
    run_paths: list[Path]
    run_overrides: list[list[str]]  # each run's: the candidate's, and its seed's
    a: float = math.nan
    c: float = math.nan
    c_strict: float = math.nan  # PCK@0.05
    score: float | None = None  # the benchmark score of its finished trainings, mean over seeds
    score_std: float | None = None  # their sample std (0 for one seed)
    predicted: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Probe:
    """What A and C are measured on: val images, keypoint pairs, the transfer window and the references
    (their aligned runs); `key` identifies it, so stored scores are reused only for the same probe."""

    images: list[Path]
    pairs: list[KeypointPair]
    window: int
    references: list[tuple[DictConfig, RunDir]]
    key: dict


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
    seeds: Sequence[int] | None = None,
    extra_dirs: Sequence[Path] = (),
) -> dict:
    """A and C for every candidate the sweep overrides expand to, the benchmark scores of those already
    trained, the fit, and (with `policy`) which candidates to train next; written to `out`. With `seeds`,
    each candidate is one run per seed and its A, C and score are their means."""
    runs = _candidate_runs(overrides, candidates, extra_dirs)
    varying = {o.partition("=")[0] for run in runs for o in run if any(o not in other for other in runs)}
    per_seed = [[f"seed={seed}"] for seed in seeds] if seeds else [[]]
    scored = []
    for run_overrides in runs:
        each = [[*run_overrides, *seed] for seed in per_seed]
        paths = [_aligned_run(o, extra_dirs)[1].path for o in each]
        scored.append(Candidate(_label(run_overrides, varying), run_overrides, paths, each))
    base = load_config(runs[0], extra_dirs)
    shared = [o for o in runs[0] if not o.startswith("encoder") and o.partition("=")[0] not in varying]
    reference_runs = [_aligned_run([*shared, f"encoder={r}"], extra_dirs) for r in references]
    probe = _probe(base, images, pairs, spair, window, reference_runs)
    benchmark = benchmark or base.data.name
    _score(scored, probe, benchmark, resolve_device(base.device), extra_dirs)
    result = _analyse(scored, benchmark, policy, trials, base.seed)
    definitions = {"a": A_DEFINITION, "c": C_DEFINITION}
    result |= {"key": probe.key, "references": references, "definitions": definitions}
    digest = hashlib.sha1(json.dumps(runs).encode()).hexdigest()[:8]
    result["out"] = str(out or Path(base.paths.runs).expanduser() / base.name / "ac" / digest)
    write(result, Path(result["out"]))
    return result


def _candidate_runs(overrides: list[str], candidates: Path | None, extra_dirs) -> list[list[str]]:
    """Every candidate's overrides: the union of the sweeps, each on top of the shared overrides."""
    runs: list[list[str]] = []
    for group in _candidate_groups(candidates):
        runs += [run for run in expand([*overrides, *group], extra_dirs) if run not in runs]
    if len(runs) < 2:
        raise ConfigError(
            "mmcompress ac compares candidates: give at least two, e.g. encoder=clip,convnext,sam"
        )
    return runs


def _probe(base: DictConfig, images: int, pairs: int, spair: Path | None, window: int, references) -> Probe:
    """The val images A averages over and the keypoint pairs C transfers on (SPair-71k's or generated)."""
    image_paths = splits.load(base, "val").images[:images]
    if spair is not None:
        pair_set, pair_source = load_spair(spair, "test", 256, limit=pairs), f"SPair-71k test ({spair})"
    else:
        size = open_image(image_paths[0]).width
        pair_set = generated_pairs(image_paths, pairs, size, seed=base.seed)
        kinds = ", ".join(sorted({p.kind for p in pair_set}))
        pair_source = f"{len(pair_set)} generated pairs of val images ({kinds})"
    key = {
        "images": len(image_paths),
        "pairs": pair_source,
        "window": window,
        "references": [str(r.path) for _, r in references],
    }
    return Probe(image_paths, pair_set, window, references, key)


def _score(candidates: list[Candidate], probe: Probe, benchmark: str, device, extra_dirs) -> None:
    """Each candidate's A and C (stored in each run's summary, or measured now) and its trained score if
    every seed has one, as means over its runs."""
    reference_tokens: list = []  # computed on first need: a rerun with every A stored loads no reference
    measured: dict[int, list[dict]] = {id(c): [] for c in candidates}  # each run's A, C and score
    each = [(c, p, o) for c in candidates for p, o in zip(c.run_paths, c.run_overrides, strict=True)]
    for candidate, path, overrides in track(each, "A and C"):
        run = RunDir(path)
        stored = run.summary().get("ac", {})
        if stored.get("key") != probe.key:
            if not reference_tokens:
                reference_tokens += [
                    projected_tokens(_align_model(c, r, device), probe.images) for c, r in probe.references
                ]
            model = _align_model(load_config(overrides, extra_dirs), run, device)
            tokens, mask = projected_tokens(model, probe.images)
            correspondence = c_scores(model, probe.pairs, probe.window)
            stored = {
                "a": float(np.mean([a_score(tokens, t, mask, m) for t, m in reference_tokens])),
                "c": correspondence["pck@0.10"],
                "c_pck05": correspondence["pck@0.05"],
                "c_by_kind": correspondence["pck@0.10_by_kind"],
                "key": probe.key,
                "definition": {"a": A_DEFINITION, "c": C_DEFINITION + " (alpha 0.10; c_pck05: 0.05)"},
            }
            run.update_summary(ac=stored)
        measured[id(candidate)].append({**stored, "score": _trained_score(run, benchmark)})
    for candidate in candidates:
        per_run = measured[id(candidate)]
        candidate.a, candidate.c, candidate.c_strict = (
            float(np.mean([r[k] for r in per_run])) for k in ("a", "c", "c_pck05")
        )
        kinds = per_run[0]["c_by_kind"]
        candidate.extra = {kind: float(np.mean([r["c_by_kind"][kind] for r in per_run])) for kind in kinds}
        scores = [r["score"] for r in per_run]
        if all(score is not None for score in scores):
            estimate = Estimate.of(scores)
            candidate.score, candidate.score_std = estimate.mean, estimate.std


def _label(overrides: list[str], varying: set[str]) -> str:
    """The overrides that tell candidates apart, shortened: 'clip clip.input_size=48'."""
    label = " ".join(o for o in overrides if o.partition("=")[0] in varying) or "default"
    return label.replace("encoder.experts.", "").replace("encoder=", "")


def _aligned_run(overrides: list[str], extra_dirs) -> tuple:
    """The candidate's config and run directory, after running its stages up to align if they are missing
    (in the directory its full training uses, which later resumes from them)."""
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


def _candidate_groups(path: Path | None) -> list[list[str]]:
    """Candidate sweeps from a YAML list of override strings (each expanded on top of the shared
    overrides); one empty group without a file."""
    import shlex

    import yaml

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
    return load_model(cfg, run, until="align").to(device).eval()


def track(items: list, label: str):
    """`items`, with a progress bar."""
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
    form = "linear"
    if len(trained) >= 2:
        y = np.array([candidates[i].score for i in trained])
        result["fit"] = fit_report(a[trained], c_[trained], y) if len(trained) >= 3 else None
        form, why = choose_form(result["fit"])
        result["form"] = {"chosen": form, "why": why}
        features = poly_features([minmax(a), minmax(c_)], FORMS[form])
        low, span = y.min(), y.max() - y.min()
        coefficients = fit(features[trained], (y - low) / span if span > 0 else y * 0)
        for candidate, value in zip(candidates, features @ coefficients, strict=True):
            candidate.predicted = float(low + value * span)
        result["underdetermined"] = len(trained) < features.shape[1]
    if len(trained) == len(candidates) and len(candidates) >= 4:
        scores = np.array([c.score for c in candidates])
        result["policy_simulation"] = simulate(a, c_, scores, trials, seed, degree=FORMS[form])
    if policy:
        result["next"] = next_trainings(candidates, seed)
    result["candidates"] = [
        {
            "label": c.label,
            "runs": [str(p) for p in c.run_paths],
            "a": c.a,
            "c": c.c,
            "c_pck05": c.c_strict,
            "c_by_kind": c.extra,
            "score": c.score,
            "score_std": c.score_std,
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
