"""The frozen-feature store's speed-up on a 3-fusion sweep (JSON out).

The same sweep, `encoder=clip+convnext+sam+pix2struct fusion=concat,sequence,xattn` with frozen experts, runs
twice from empty caches: with `train.cache_features=memory` every run encodes the images itself; with
`disk` (the default) the first run encodes them and the other two read the store. Both start from
the same pre-generated data and the shipped mini experts, so the difference is encoding alone.

python benchmarks/feature_cache.py [--steps 100] [--encoder clip+convnext+sam+pix2struct]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FUSIONS = "concat,sequence,xattn"


def sweep(cache: Path, runs: Path, mode: str, encoder: str, steps: int) -> float:
    """Wall time of the whole sweep, one run after another."""
    command = [
        str(Path(sys.executable).with_name("mmcompress")),
        "sweep",
        f"encoder={encoder}",
        f"fusion={FUSIONS}",
        f"train.cache_features={mode}",
        f"stage.finetune.steps={steps}",
        "logger=none",
        f"paths.runs={runs}",
    ]
    env = {**os.environ, "MMCOMPRESS_CACHE": str(cache), "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="finetune steps per run (default 100)")
    parser.add_argument("--encoder", default="clip+convnext+sam+pix2struct")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm = root / "warm"  # generated data, copied into each empty cache so generation is not timed
        generate = (
            "from mmcompress.config import load_config; from mmcompress.data.splits import dataset_dir; "
        )
        generate += "dataset_dir(load_config([]))"
        subprocess.run(
            [sys.executable, "-c", generate],
            check=True,
            env={**os.environ, "MMCOMPRESS_CACHE": str(warm)},
            capture_output=True,
        )
        times = {}
        for mode in ("disk", "memory"):
            cache = root / mode
            shutil.copytree(warm, cache)
            times[mode] = sweep(cache, root / f"runs-{mode}", mode, args.encoder, args.steps)
    print(
        json.dumps(
            {
                "benchmark": "feature_cache",
                "sweep": f"encoder={args.encoder} fusion={FUSIONS} stage.finetune.steps={args.steps}",
                "memory_s": round(times["memory"], 1),
                "disk_s": round(times["disk"], 1),
                "speedup": round(times["memory"] / times["disk"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
