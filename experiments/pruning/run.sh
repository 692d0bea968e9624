#!/usr/bin/env bash
# Visual-token pruning on the embedded benchmark, on a 16×16 token grid (encoder=clip-16x16: the mini CLIP
# with 4 px patches, pretrained on first use).
# 1. The unpruned model, seeds 0, 1, 2 (SEEDS; the recorded result ran "0 1"), at the default budget but a 600-step finetune (STEPS; 1500 default):
#    256 visual tokens make every step ~4× dearer than the default experiment's 64.
# 2. Training-free: each trained model evaluated under every method at every budget (init_from, stages=[eval]).
# 3. The two best methods at 11% and 5.5% (BEST, chosen from step 2's result) and PruMerge applied during
#    training too (align and finetune).
# Also: top-k by the signals of experts without [CLS] (distinct, norm) against CLS attention.
# Then `mmcompress report` for each part and summarize.py for the table and the accuracy-vs-tokens plot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-$here/runs}
seeds=${SEEDS:-"0 1 2"}
steps=${STEPS:-600}
best=${BEST-"spatial,random,prumerge"}  # the two best at 11% and 5.5% training-free, and PruMerge (the paper)
export WANDB_MODE=${WANDB_MODE:-disabled}
read -ra extra <<<"${EXTRA:-}"  # e.g. EXTRA=debug=fast for a smoke run of the whole pipeline
common=(encoder=clip-16x16 "stage.finetune.steps=$steps" logger=none launcher=parallel "paths.runs=$runs" "${extra[@]}")
seed_list=$(tr ' ' , <<<"$seeds")

mmcompress sweep name=pruning "${common[@]}" "seed=$seed_list"
for seed in $seeds; do
  trained=$(mmcompress train name=pruning "${common[@]}" "seed=$seed" 'stages=[prealign,align,finetune]' | tail -1)
  mmcompress sweep name=pruning-free "${common[@]}" "seed=$seed" "init_from=$trained" 'stages=[eval]' \
    pruning=random,spatial,topk,tome pruning.ratio=0.5,0.25,0.11,0.055
  mmcompress sweep name=pruning-free "${common[@]}" "seed=$seed" "init_from=$trained" 'stages=[eval]' \
    pruning=none,prumerge,prumerge_plus
  mmcompress sweep name=pruning-signals "${common[@]}" "seed=$seed" "init_from=$trained" 'stages=[eval]' \
    pruning=topk pruning.ratio=0.11,0.055 pruning.importance=distinct,norm
done
mmcompress report "$runs/pruning-free" --out "$here/report-free"
[ -n "$best" ] || exit 0  # BEST= : stop after the training-free part, to choose the two best
mmcompress sweep name=pruning-trained "${common[@]}" "seed=$seed_list" "pruning=$best" pruning.ratio=0.11,0.055
mmcompress report "$runs/pruning" "$runs/pruning-trained" --out "$here/report-trained"
python "$here/summarize.py" "$runs" "$here"
