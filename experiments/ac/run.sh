#!/usr/bin/env bash
# The AC score on the embedded benchmark: 14 vision representations, each fully trained with seeds 0, 1, 2
# (SEEDS), scored by `mmcompress ac --seeds` (means over seeds), fitted and the AC policy simulated.
# ~3.5 h of training on 2 CPU cores. The recorded result/ was made with one seed (SEEDS=0), before --seeds.
# Every candidate feeds the LLM 64 tokens (grid=[8,8]), so only the representation differs.
set -euo pipefail
cd "$(dirname "$0")"
COMMON=(name=ac paths.runs=runs logger=none grid=[8,8] stage.finetune.steps=600 train.log_every=50)

SEEDS=${SEEDS:-0,1,2}  # every candidate trained with each; A, C and score are means over them

mmcompress sweep "${COMMON[@]}" "seed=$SEEDS" encoder=clip encoder.experts.clip.input_size=null,48,96
mmcompress sweep "${COMMON[@]}" "seed=$SEEDS" encoder=convnext encoder.experts.convnext.stage=2,3,4
mmcompress sweep "${COMMON[@]}" "seed=$SEEDS" encoder=sam,pix2struct,clip+sam,clip+convnext,clip+pix2struct,sam+pix2struct,convnext+sam,clip+convnext+sam+pix2struct

mmcompress ac "${COMMON[@]}" --seeds "$SEEDS" --candidates candidates.yaml --policy --out result
mmcompress report runs/ac --out report
