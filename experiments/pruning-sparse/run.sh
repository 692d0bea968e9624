#!/usr/bin/env bash
# Pruning where it is a real question: the redundant world (world=sparse: 224 px, small objects on ~3% of
# the image) seen by DINOv2-S/14 at its own 16×16 grid (real [CLS] attention), the tiny LLM, bf16 autocast.
# 1. The unpruned model, seeds 0–2 (SEEDS), finetune 1500 steps (STEPS) with val scored every 300 steps on
#    600 val questions, to show the val score has stopped rising.
# 2. Training-free: each unpruned model evaluated under every method at 11% and 5.5% (28 and 14 tokens) and
#    PruMerge / PruMerge+ at their adaptive counts.
# 3. Trained with pruning, PruMerge's protocol (its LoRA runs fine-tune the trained LLaVA with pruning in the
#    loop): each unpruned model fine-tuned FINETUNE more steps with pruning, for the methods in TRAINED.
# Then summarize.py: result.md, result.json and summaries/ (every run's summary.json, kept here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-$here/runs}
seeds=${SEEDS:-"0 1 2"}
steps=${STEPS:-1500}
finetune=${FINETUNE:-300}
trained=${TRAINED-"visionzip,random"}  # chosen on val from step 2 (see README): the best there, and random
export WANDB_MODE=${WANDB_MODE:-disabled} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
read -ra extra <<<"${EXTRA:-}"  # e.g. EXTRA=debug=fast for a smoke run of the whole pipeline
common=(world=sparse encoder=dinov2-s precision=auto logger=none "paths.runs=$runs" "${extra[@]}")
unpruned=("${common[@]}" "stage.finetune.steps=$steps" train.val_every=300 train.val_samples=600)

mmcompress weights fetch dinov2-s >/dev/null
mmcompress sweep name=sparse "${unpruned[@]}" "seed=$(tr ' ' , <<<"$seeds")"
for seed in $seeds; do
  model=$(mmcompress train name=sparse "${unpruned[@]}" "seed=$seed" | tail -1)
  mmcompress sweep name=sparse-free "${common[@]}" "seed=$seed" "init_from=$model" 'stages=[eval]' \
    pruning=random,spatial,topk,tome,visionzip,divprune pruning.ratio=0.11,0.055
  mmcompress sweep name=sparse-free "${common[@]}" "seed=$seed" "init_from=$model" 'stages=[eval]' \
    pruning=prumerge,prumerge_plus
  [ -z "$trained" ] && continue  # TRAINED= : stop after the training-free part
  mmcompress sweep name=sparse-trained "${common[@]}" "seed=$seed" "init_from=$model" \
    'stages=[finetune,eval]' "stage.finetune.steps=$finetune" "pruning=$trained" pruning.ratio=0.11,0.055
done
mkdir -p "$here/summaries"
for summary in "$runs"/sparse*/*/summary.json; do
  cp "$summary" "$here/summaries/$(basename "$(dirname "$(dirname "$summary")")")--$(basename "$(dirname "$summary")").json"
done
python "$here/summarize.py" "$here/summaries" "$here"
