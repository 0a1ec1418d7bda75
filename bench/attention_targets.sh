#!/usr/bin/env bash
# The attention targets of docs/BENCHMARKS.md: causal, batch 1, 12 heads, h 64, r 32, b 256,
# all cores, forward+backward, median of 3. Softmax stops at 32768 (no target needs its 65536,
# which takes 8 minutes; see the scaling run). Writes docs/bench/targets.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./build/release/polysketch
out=docs/bench
mkdir -p "$out"
{
  $bin bench-attention --json --pass fwd+bwd --repeat 3 --mechanism softmax --n 4096,8192,32768
  $bin bench-attention --json --pass fwd+bwd --repeat 3 \
    --mechanism polysketch,polysketch-learned-local --n 4096,8192,32768,65536
} | tee "$out/targets.jsonl.tmp"
mv "$out/targets.jsonl.tmp" "$out/targets.jsonl"
