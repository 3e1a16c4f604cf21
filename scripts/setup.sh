#!/usr/bin/env bash
# Installs everything tflm-train, its tests and its demo need, from this repo's own files.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v g++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq g++ >/dev/null
  else
    echo "setup: g++ is required (apt-get install g++)" >&2; exit 1
  fi
fi
# Cortex-M cross builds and emulated-MCU runs (tests/test_cortex_m.py, tests/test_qemu_firmware.py)
# and Fashion-MNIST (tests/test_accuracy_benchmark.py); those tests skip without them, so only
# root (CI) installs them.
OPTIONAL_PACKAGES="gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm dataset-fashion-mnist"
if [ "$(id -u)" = 0 ] && ! dpkg -s $OPTIONAL_PACKAGES >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $OPTIONAL_PACKAGES >/dev/null
fi
python3 -m pip install -q -e ".[test]"
