#!/usr/bin/env bash
# The AC score on the embedded benchmark: 14 vision representations, each fully trained once (seed 0),
# scored by `mmcompress ac`, fitted and the AC policy simulated. ~75 min of training on 2 CPU cores.
# Every candidate feeds the LLM 64 tokens (grid=[8,8]), so only the representation differs.
set -euo pipefail
cd "$(dirname "$0")"
COMMON=(name=ac paths.runs=runs logger=none grid=[8,8] stage.finetune.steps=600 train.log_every=50)

mmcompress sweep "${COMMON[@]}" encoder=clip encoder.experts.clip.input_size=null,48,96
mmcompress sweep "${COMMON[@]}" encoder=convnext encoder.experts.convnext.stage=2,3,4
mmcompress sweep "${COMMON[@]}" encoder=sam,pix2struct,clip+sam,clip+convnext,clip+pix2struct,sam+pix2struct,convnext+sam,clip+convnext+sam+pix2struct

mmcompress ac "${COMMON[@]}" --candidates candidates.yaml --policy --out result
mmcompress report runs/ac --out report
