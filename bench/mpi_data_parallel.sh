#!/usr/bin/env bash
# Data parallelism on one machine (docs/BENCHMARKS.md, "Data parallelism"): training tokens/s of
# 2 ranks x 1 thread (mpirun) against 1 process x 2 threads, same model, same global batch
# (--accum 2 for the single process, --accum 1 per rank); and the bytes each rank contributes to
# the step's allreduce, against the formula 4 x parameters + 16 (loss, stop flags).
# Usage: bash bench/mpi_data_parallel.sh [STEPS]   (default 30; the first 5 steps are not timed)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/release/polysketch}
steps=${1:-30}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 POLYSKETCH_GEMM=${POLYSKETCH_GEMM:-onednn}
[ -f data/kjv/train.bin ] || "$BIN" prepare --out data/kjv >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model="--data data/kjv --layers 4 --width 256 --heads 4 --context 256 --r 32 --block 64 --batch 8
  --mechanism ${MECHANISM:-polysketch-learned-local} --steps $steps --eval-every 0 --eval-batches 1 --checkpoint-every 0"
median_tok_s() { jq -s -r '[.[] | select(.tokens_per_s != null and .step > 5) | .tokens_per_s] | sort | .[length / 2 | floor]' "$1/metrics.jsonl"; }
for round in 1 2; do
  # shellcheck disable=SC2086
  "$BIN" train $model --accum 2 --threads 2 --out "$tmp/one$round" > "$tmp/one$round.log" 2>&1
  # shellcheck disable=SC2086
  mpirun --oversubscribe -np 2 --bind-to none "$BIN" train $model --accum 1 --threads 1 --out "$tmp/dp$round" >/dev/null 2>&1
  one=$(median_tok_s "$tmp/one$round"); dp=$(median_tok_s "$tmp/dp$round")
  bytes=$(jq -s -r '[.[] | select(.allreduce_bytes != null and .step > 1) | .allreduce_bytes] | unique | map(tostring) | join(",")' "$tmp/dp$round/metrics.jsonl")
  params=$(grep -o '^model: [0-9]*' "$tmp/one$round.log" | grep -o '[0-9]*$')
  jq -n -c --argjson one "$one" --argjson dp "$dp" --arg bytes "$bytes" --argjson round "$round" \
    --argjson params "$params" \
    '{round: $round, one_process_2_threads_tok_s: $one, two_ranks_1_thread_tok_s: $dp, ratio: ($dp / $one),
      allreduce_bytes_per_step: $bytes, formula_4p_plus_16: (4 * $params + 16)}'
done
