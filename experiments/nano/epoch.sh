#!/usr/bin/env bash
# The nano MLLM's learning curve over one epoch of synthvqa (24,000 samples), for the arm with the mini
# CLIP beside DINOv2: `align` as in the 15-minute recipe (95 steps × 32), then `finetune` for 655 × 32 =
# 20,960 samples, scoring the first 300 val questions (50 per category) every 50 steps. Keeps the run's
# metrics.jsonl, summary.json and config.yaml in epoch/ and writes epoch/result.md and epoch/curve.png.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-$here/runs}
run=$(WANDB_MODE=disabled mmcompress train experiment=nano encoder=dinov2-s+clip seed="${SEED:-0}" logger=none \
  stage.finetune.steps=655 train.val_every=50 train.val_samples=300 "paths.runs=$runs" | tail -n 1)
mkdir -p "$here/epoch"
cp "$run/metrics.jsonl" "$run/summary.json" "$run/config.yaml" "$here/epoch/"
python "$here/curve.py" "$here/epoch" "$here/epoch/curve.png" > "$here/epoch/result.md"
cat "$here/epoch/result.md"
