#!/usr/bin/env bash
# The decoding benchmark of docs/BENCHMARKS.md: writes docs/bench/decode.jsonl and the plot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
./build/release/polysketch bench-decode --json | tee docs/bench/decode.jsonl
bash tools/plot_decode.sh
