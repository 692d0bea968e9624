#!/usr/bin/env bash
# Importance signals against the world's ground truth: which tokens each signal keeps (~3 min on 2 cores,
# after the mini experts exist; clip-16x16 is pretrained on first use: 45 min).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python "$here/measure.py" "$here"
