#!/usr/bin/env bash
# The position question on the default world ("is the X left of / above the Y?", at chance in every run so
# far). Arms, seeds 0-2 each, the default recipe otherwise, one run at a time (~3.7 min each on 2 cores):
#   none                      the default
#   projector.positions=4     each token's grid cell (row, column) as sin/cos at 4 octaves, appended to the
#                             experts' channels before the projector (position_at=input)
#   ... position_at=output    the same codes added to the projected tokens' first 16 dimensions
# Then the table (val printed beside test, differences marked beyond 2 SE), the report, and the probes of
# where each seed-0 run loses the place of its tokens.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-$here/runs}
common=(name=position logger=none "paths.runs=$runs")
export WANDB_MODE=${WANDB_MODE:-disabled}
mmcompress sweep "${common[@]}" projector.positions=0 seed=0,1,2
mmcompress sweep "${common[@]}" projector.positions=4 projector.position_at=input,output seed=0,1,2
python "$here/summarize.py" "$runs/position" > "$here/result.md"
mmcompress report "$runs/position" --out "$here/report" --allow-mixed-versions
python "$here/probe.py" "$here" "$runs"/position/*_s0-*
if [[ "${DEEP:-0}" == 1 ]]; then  # the same question with a 4-layer LLM: none and positions at the output
  mmcompress sweep name=position-deep logger=none "paths.runs=$runs" llm.layers=4 projector.positions=0,4 \
    projector.position_at=output seed=0,1,2
  python "$here/summarize.py" "$runs/position-deep" > "$here/result-deep.md"
fi
