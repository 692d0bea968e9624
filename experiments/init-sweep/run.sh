#!/usr/bin/env bash
# The tiny LLM's initialisation against the step at which question–image matching is learned:
# initializer_range 0.02 (transformers' default) vs 0.08 (~1/sqrt(width), the default) over three seeds, at
# a shortened 1000-step finetune, two runs at a time; then the report (recorded in report/).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-$here/runs}
WANDB_MODE=${WANDB_MODE:-disabled} mmcompress sweep llm.initializer_range=0.02,0.08 seed=0,1,2 \
  stage.finetune.steps=1000 train.val_every=250 launcher=parallel "paths.runs=$runs"
mmcompress report "$runs/default" --out "$here/report"
