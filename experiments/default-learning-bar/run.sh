#!/usr/bin/env bash
# The default experiment for seeds 0, 1, 2 (the bar), then the table in result.md (SEEDS="0 1 2 3" adds more).
# Seed 0 starts from an empty cache, so its time includes data generation and expert pretraining, as on a
# fresh machine; seeds 1 and 2 reuse that cache (the mini expert does not depend on the run seed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-$here/runs}
cache=$(mktemp -d)
for seed in ${SEEDS:-0 1 2}; do
  MMCOMPRESS_CACHE=$cache WANDB_MODE=disabled mmcompress train seed=$seed "paths.runs=$runs"
done
python "$here/collect.py" "$runs/default" > "$here/result.md"
cat "$here/result.md"
