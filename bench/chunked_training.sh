#!/usr/bin/env bash
# Chunked training (`--chunk`) against whole sequences on the bench-train model (4 layers, width
# 768, 12 heads, vocab 4096, r 32, b 256): tokens/s and peak RSS per context, one process per
# measurement (peak RSS is the process's), in one run (docs/BENCHMARKS.md, "Chunked training").
#
# Usage: bash bench/chunked_training.sh [OUT.jsonl]   (default docs/bench/chunked_training.jsonl)
# Environment: MECHANISM (polysketch), CHUNK (8192), THREADS (2), LONG ("262144 1048576": the
#   chunked contexts beyond 32k, "" for none; the 1M step takes about 20 minutes on 2 cores), PAIRS (1: the
#   32k whole/chunked pair, interleaved, this many times), BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/bench/chunked_training.jsonl}
BIN=${BIN:-build/release/polysketch}
MECHANISM=${MECHANISM:-polysketch} CHUNK=${CHUNK:-8192} THREADS=${THREADS:-2}
LONG=${LONG-"262144 1048576"} PAIRS=${PAIRS:-1}
model=(--layers 4 --width 768 --heads 12 --vocab 4096 --r 32 --block 256 --threads "$THREADS" --json)
: > "$out.tmp"
bench() {  # bench N CHUNK WARMUP
  "$BIN" bench-train --mechanism "$MECHANISM" --n "$1" --chunk "$2" --warmup "$3" --repeat 1 "${model[@]}" | tee -a "$out.tmp"
}
for _ in $(seq "$PAIRS"); do
  bench 32768 0 1
  bench 32768 "$CHUNK" 1
done
for n in $LONG; do bench "$n" "$CHUNK" 0; done
# softmax at 256k: refused by the memory estimate before anything is allocated
if "$BIN" bench-train --mechanism softmax --n 262144 "${model[@]}" > /dev/null 2> "$out.err"; then
  echo "softmax at 262144 was not refused" >&2; exit 1
fi
jq -n -c --arg error "$(cat "$out.err")" '{mechanism: "softmax", n: 262144, refused: $error}' | tee -a "$out.tmp"
rm -f "$out.err"
mv "$out.tmp" "$out"
