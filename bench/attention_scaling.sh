#!/usr/bin/env bash
# Every mechanism over n (forward, forward+backward) for the scaling table and plot of
# docs/BENCHMARKS.md. Writes docs/bench/scaling.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./build/release/polysketch
out=docs/bench
mkdir -p "$out"
$bin bench-attention --json --pass fwd,fwd+bwd --repeat 1 \
  --mechanism polysketch,polysketch-learned,polysketch-local,polysketch-learned-local \
  --n 1024,2048,4096,8192,16384,32768,65536 | tee "$out/scaling.jsonl.tmp"
$bin bench-attention --json --pass fwd,fwd+bwd --repeat 1 --mechanism softmax,polynomial \
  --n 1024,2048,4096,8192,16384 | tee -a "$out/scaling.jsonl.tmp"
mv "$out/scaling.jsonl.tmp" "$out/scaling.jsonl"
