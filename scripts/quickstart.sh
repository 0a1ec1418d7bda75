#!/usr/bin/env bash
# Fresh machine -> installed, built, and the main job run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh release
./build/release/polysketch bench-attention --n 1024,4096,16384 \
  --mechanism softmax,polysketch,polysketch-learned-local --repeat 1
