#!/usr/bin/env bash
# Side by side, in one run: two builds of polysketch (e.g. 7882dc8, before the model-core
# restructure, and main), interleaved over 3 rounds: bench-train at 8192 (learned-local and
# softmax, f32 and bf16 forced), bench-attention fwd+bwd at 32768 (polysketch), bench-decode at
# 4096 (batch 1 and 16, 256 tokens). ~35 min on 2 cores.
#   bash bench/core_side_by_side.sh BASE_BIN MAIN_BIN [OUT.jsonl]
set -euo pipefail
base=$1 main=$2 out=${3:-docs/bench/core-restructure-side-by-side.jsonl}
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
for round in 1 2 3; do
  for v in base main; do
    bin=$base; [ $v = main ] && bin=$main
    tag() { jq -c --arg v $v --arg r $round --arg b "$1" '. + {version: $v, round: $r, bench: $b}' >> "$tmp"; }
    for prec in f32 bf16; do
      POLYSKETCH_BF16=always $bin bench-train --mechanism polysketch-learned-local,softmax --n 8192 --precision $prec --repeat 2 --warmup 1 --json 2>/dev/null | tag train
    done
    $bin bench-attention --mechanism polysketch --n 32768 --pass fwd+bwd --repeat 3 --json 2>/dev/null | tag attention
    $bin bench-decode --mechanism polysketch-learned-local,softmax --context 4096 --batch 1,16 --decode 256 --json 2>/dev/null | tag decode
  done
done
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out"
