#!/usr/bin/env bash
# The attention benchmark behind docs/BENCHMARKS.md: the issue's target configuration (causal,
# batch 1, 12 heads, h 64, r 32, b 256, all cores) in one run, then every mechanism over n for
# the plot. Writes JSON lines into docs/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./build/release/polysketch
out=docs/bench
mkdir -p "$out"
$bin bench-attention --json --pass fwd+bwd --repeat 3 \
  --mechanism softmax,polysketch,polysketch-learned-local --n 4096,8192,32768,65536 \
  | tee "$out/targets.jsonl.tmp"
mv "$out/targets.jsonl.tmp" "$out/targets.jsonl"
$bin bench-attention --json --pass fwd,fwd+bwd --repeat 1 \
  --mechanism polysketch,polysketch-learned,polysketch-local,polysketch-learned-local \
  --n 1024,2048,4096,8192,16384,32768,65536 | tee "$out/scaling.jsonl.tmp"
$bin bench-attention --json --pass fwd,fwd+bwd --repeat 1 --mechanism softmax,polynomial \
  --n 1024,2048,4096,8192,16384 | tee -a "$out/scaling.jsonl.tmp"
mv "$out/scaling.jsonl.tmp" "$out/scaling.jsonl"
