#!/usr/bin/env bash
# Sets everything up, then runs the end-to-end VWW demo (get model -> convert -> train in TFLM -> export).
# Outputs go to ./out/ under the current directory (or --out DIR).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bash "$repo/scripts/setup.sh"
python3 "$repo/examples/vww/run_demo.py" "$@"
