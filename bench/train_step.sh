#!/usr/bin/env bash
# polysketch bench-train with the issue's configuration (4 layers, width 768, 12 heads, batch 1,
# r 32, b 256; softmax, polysketch, polysketch-learned-local at n = 2048, 8192, 32768).
# Writes docs/bench/train.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
./build/release/polysketch bench-train --json | tee docs/bench/train.jsonl.tmp
mv docs/bench/train.jsonl.tmp docs/bench/train.jsonl
