#!/usr/bin/env bash
# Every benchmark behind docs/BENCHMARKS.md, in order: attention targets, attention scaling
# (for the plot), training-step benchmark. Writes JSON lines into docs/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/attention_targets.sh
./build/release/polysketch bench-train --json | tee docs/bench/train.jsonl.tmp
mv docs/bench/train.jsonl.tmp docs/bench/train.jsonl
bash tools/plot_attention.sh
