#!/usr/bin/env bash
# EAGLE's design space on the embedded benchmark: encoder ∈ {clip, clip+sam, clip+convnext+sam+pix2struct}
# × fusion ∈ {concat, sequence, xattn} × seeds 0, 1, 2 (SEEDS; the recorded report ran 0,1), at a shortened 600-step finetune (default 1500), two runs
# at a time; frozen experts, so their grid features are encoded once and read from the feature store by every
# other run. clip × xattn is planned as invalid (cross-attention needs a second expert). Then the report.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-$here/runs}
WANDB_MODE=${WANDB_MODE:-disabled} mmcompress sweep name=mixtures \
  encoder=clip,clip+sam,clip+convnext+sam+pix2struct fusion=concat,sequence,xattn "seed=${SEEDS:-0,1,2}" \
  stage.finetune.steps=600 launcher=parallel "paths.runs=$runs"
mmcompress report "$runs/mixtures" --out "$here/report"
