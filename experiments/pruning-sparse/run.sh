#!/usr/bin/env bash
# Pruning where it is a real question: the redundant world (world=sparse: 224 px, small objects on ~3% of
# the image) seen by DINOv2-S/14 at its own 16×16 grid (real [CLS] attention), the tiny LLM, bf16 autocast.
# 1. The unpruned model, seeds 0–2 (SEEDS), finetune 1500 steps (STEPS) with val scored every 300 steps on
#    600 val questions; and the same with the finetune twice as long, to test whether val still rises.
# 2. Training-free: each unpruned model evaluated under every method at 11% and 5.5% (28 and 14 tokens) and
#    PruMerge / PruMerge+ at their adaptive counts.
# 3. Trained with pruning: the whole finetune (STEPS, its own rate) trained with pruning from each unpruned
#    run's aligned model (init_from reuses the stages before the first one run), for the methods in
#    TRAINED: the same aligned model and schedule as the unpruned model, so that model is the reference.
# 4. Retrained briefly: the finetune stage retrained with pruning, FINETUNE steps at LR, for TRAINED; and
#    the same retraining without pruning (the control: equal training, all 256 tokens).
# Then summarize.py: result.md, result.json and accuracy_vs_tokens.png from record/ (every run's files).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-$here/runs}
out=${OUT:-$here}  # where record/, result.md, result.json and the plot go (elsewhere for a smoke run)
seeds=${SEEDS:-"0 1 2"}
steps=${STEPS:-1500}
finetune=${FINETUNE:-300}
lr=${LR:-1e-4}  # the retrained finetune's rate (the recorded runs; a first seed-0 pass at 1e-3 is in README)
trained=${TRAINED-"visionzip,random"}  # chosen on val in step 2 (README): the best at both budgets, and random
export WANDB_MODE=${WANDB_MODE:-disabled} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
read -ra extra <<<"${EXTRA:-}"  # e.g. EXTRA=debug=fast for a smoke run of the whole pipeline
common=(world=sparse encoder=dinov2-s precision=auto logger=none "paths.runs=$runs" "${extra[@]}")
curve=(train.val_every=300 train.val_samples=600)
unpruned=("${common[@]}" "stage.finetune.steps=$steps" "${curve[@]}")

mmcompress weights fetch dinov2-s >/dev/null
mmcompress sweep name=sparse "${unpruned[@]}" "seed=$(tr ' ' , <<<"$seeds")"
mmcompress sweep name=sparse-long "${common[@]}" "stage.finetune.steps=$((2 * steps))" "${curve[@]}" \
  "seed=$(tr ' ' , <<<"$seeds")"
seed_of() { sed 's/.*_s\([0-9]*\)-.*/\1/' <<<"$1"; }  # a run directory's seed, from its id
models=()
for seed in $seeds; do models+=("$(mmcompress train name=sparse "${unpruned[@]}" "seed=$seed" | tail -1)"); done
for model in "${models[@]}"; do
  from=("${common[@]}" "seed=$(seed_of "$model")" "init_from=$model")
  mmcompress sweep name=sparse-free "${from[@]}" 'stages=[eval]' \
    pruning=random,spatial,topk,tome,visionzip,divprune pruning.ratio=0.11,0.055
  mmcompress sweep name=sparse-free "${from[@]}" 'stages=[eval]' pruning=prumerge,prumerge_plus
done
for model in "${models[@]}"; do
  [ -n "$trained" ] || break  # TRAINED= : stop after the training-free part
  from=("${common[@]}" "seed=$(seed_of "$model")" "init_from=$model")
  mmcompress sweep name=sparse-pruned-full "${from[@]}" 'stages=[finetune,eval]' "stage.finetune.steps=$steps" \
    "${curve[@]}" "pruning=$trained" pruning.ratio=0.11,0.055
  tuned=("${from[@]}" 'stages=[finetune,eval]' "stage.finetune.steps=$finetune" "stage.finetune.lr=$lr")
  mmcompress sweep name=sparse-trained "${tuned[@]}" "pruning=$trained" pruning.ratio=0.11,0.055
  mmcompress sweep name=sparse-trained "${tuned[@]}" pruning=none  # the control: as many steps, unpruned
done
# The record: each run's config, overrides, summary and metrics (checkpoints stay in RUNS), read by summarize.py.
for run in "$runs"/sparse*/*/; do
  [ -f "$run/summary.json" ] || continue
  dest="$out/record/$(basename "$(dirname "$run")")/$(basename "$run")"
  mkdir -p "$dest"
  for file in config.yaml overrides.txt summary.json metrics.jsonl; do  # evaluation-only runs log no metrics
    [ ! -f "$run/$file" ] || cp "$run/$file" "$dest/"
  done
done
python "$here/summarize.py" "$out/record" "$out" "$@"  # e.g. --allow-mixed-versions
