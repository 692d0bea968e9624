"""Where a trained run's visual tokens lose their place: linear probes of each object-covered grid cell's
row and column, read from the fused expert tokens (before the projector), the projected tokens (the LLM's
input) and the LLM's hidden state after each layer, with the visual tokens fed alone in grid order.

python probe.py OUT_DIR RUN_DIR [RUN_DIR ...]     # writes OUT_DIR/probe.md and probe.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mmcompress.analysis.probes import linear_probe_accuracy
from mmcompress.data.world import world_dir
from mmcompress.evaluation.stage import load_run
from mmcompress.model.build import load_model
from mmcompress.model.features import split_features
from mmcompress.training.mini_experts.scenes import WorldScenes

IMAGES = {"train": 1500, "val": 500}  # world images probed per split
BATCH = 100


@torch.no_grad()
def representations(run_path: Path) -> tuple[dict, tuple[int, int], str]:
    """{split: {stage name: (cells, width) features}} of object-covered cells, their (row, col) labels under
    "_row"/"_col", the grid, and the run's positions arm ("none" or "<positions> at <input|output>")."""
    cfg, run = load_run(run_path, [])
    model = load_model(cfg, run).eval()
    grid = tuple(model.fusion.grid)
    out = {}
    for split, count in IMAGES.items():
        scenes = WorldScenes(world_dir(cfg), split)
        count = min(count, len(scenes))
        paths = [str(p) for p in scenes.paths[:count]]
        encoded = split_features(
            dict(model.experts), paths, cfg, torch.device("cpu"), split, model.signal_spec
        )
        covered = scenes.patch_labels(grid, ("color",))["color"][:count] > 0  # (n, N)
        stages: dict[str, list[torch.Tensor]] = {}
        for start in range(0, count, BATCH):
            rows = slice(start, start + BATCH)
            batch = {name: e[rows] for name, e in encoded.items()}
            mask = covered[rows]  # (b, N)
            positioned = model.with_cell_positions(batch)
            fused = model.fusion({name: e.tokens for name, e in positioned.items()})  # (b, N, ΣC)
            visual, _ = model.visual_tokens(batch)  # (b, N, D)
            hidden = model.llm.get_decoder()(inputs_embeds=visual, output_hidden_states=True).hidden_states
            found = {"expert tokens (fused)": fused, "projected (LLM input)": visual}
            found |= {f"LLM layer {i}": h for i, h in enumerate(hidden[1:], 1)}
            for name, tensor in found.items():
                stages.setdefault(name, []).append(tensor[mask].float())
        cell = torch.arange(grid[0] * grid[1]).expand(covered.shape)[covered]  # (cells,)
        out[split] = {name: torch.cat(parts) for name, parts in stages.items()}
        out[split] |= {"_row": cell // grid[1], "_col": cell % grid[1]}
    positions = int(cfg.projector.get("positions") or 0)
    arm = f"{positions} at {cfg.projector.get('position_at') or 'input'}" if positions else "none"
    return out, grid, arm


def probe_run(run_path: Path) -> dict:
    data, grid, positions = representations(run_path)
    rows = {}
    for name in (k for k in data["train"] if not k.startswith("_")):
        rows[name] = {
            axis: linear_probe_accuracy(
                data["train"][name],
                data["train"][f"_{axis}"],
                data["val"][name],
                data["val"][f"_{axis}"],
                size,
            )
            for axis, size in (("row", grid[0]), ("col", grid[1]))
        }
    return {"run": str(run_path), "positions": positions, "grid": list(grid), "probes": rows}


def markdown(results: list[dict]) -> str:
    lines = [
        "| run (positions) | representation | row accuracy | column accuracy |",
        "|---|---|---|---|",
    ]
    for result in results:
        for name, accuracy in result["probes"].items():
            label = f"{Path(result['run']).name} ({result['positions']})"
            lines.append(f"| {label} | {name} | {accuracy['row']:.3f} | {accuracy['col']:.3f} |")
    grid = results[0]["grid"]
    lines.append(
        f"\nChance: 1/{grid[0]} = {1 / grid[0]:.3f} (rows), 1/{grid[1]} = {1 / grid[1]:.3f} (columns)."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    out, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    if not runs:
        sys.exit("usage: probe.py OUT_DIR RUN_DIR [RUN_DIR ...]")
    out.mkdir(parents=True, exist_ok=True)
    results = [probe_run(run) for run in runs]
    (out / "probe.json").write_text(json.dumps(results, indent=2))
    (out / "probe.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
