#!/usr/bin/env bash
# Linear probes on each shipped mini expert's frozen features, on the 8×8 grid the mixtures use (the mini
# CLIP's own grid; SAM's 16×16×64 neck is pixel-unshuffled to 8×8×256 as in the mixture). ~5 min on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python "$here/probe.py" "$here" "grid=[8,8]" "$@"
