#!/usr/bin/env bash
# The measurements of docs/BENCHMARKS.md "Using the whole CPU": bench-train before (a build of
# BASE_BIN, e.g. commit 99594a6 built elsewhere) and after, f32 and bf16; bench-attention
# efficiency against the peaks measured in the same run; bench-gemm. One command at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
bin=./build/release/polysketch
if [ -n "${BASE_BIN:-}" ]; then "$BASE_BIN" bench-train --n 8192,32768 --json | tee docs/bench/train_before_onednn.jsonl; fi
{ $bin bench-train --n 8192,32768 --json; $bin bench-train --n 8192,32768 --json --precision bf16; } | tee docs/bench/train_onednn.jsonl
for p in f32 bf16; do
  $bin bench-attention --mechanism softmax --n 8192 --json --precision $p
  $bin bench-attention --mechanism polysketch,polysketch-learned-local --n 32768 --json --precision $p
done | tee docs/bench/attention_onednn.jsonl
$bin bench-gemm --json | tee docs/bench/gemm.jsonl
