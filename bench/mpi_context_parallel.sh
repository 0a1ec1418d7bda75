#!/usr/bin/env bash
# Context parallelism on one machine (docs/BENCHMARKS.md, "Context parallelism"): training
# tokens/s of 2 ranks x 1 thread, each holding half of every sequence (--context-parallel 2),
# against 1 process x 2 threads, same model and data; and the bytes each rank passes along its
# group per step (`context_bytes` in metrics.jsonl) against the formula
# layers x 2 x batch x heads x r(r+1)/2 x (head_dim + 1) x 4, which does not depend on the context.
# Usage: bash bench/mpi_context_parallel.sh [STEPS]   (default 8; the first 2 steps are not timed)
# MECHANISM (default polysketch-learned-local), CONTEXT (default 8192) override.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/release/polysketch}
steps=${1:-8}
ctx=${CONTEXT:-8192}
mech=${MECHANISM:-polysketch-learned-local}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 POLYSKETCH_GEMM=${POLYSKETCH_GEMM:-onednn}
[ -f data/kjv/train.bin ] || "$BIN" prepare --out data/kjv >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
layers=4 width=256 heads=4 r=32 batch=1
model="--data data/kjv --layers $layers --width $width --heads $heads --context $ctx --r $r --block 256
  --batch $batch --mechanism $mech --steps $steps --warmup 2 --eval-every 0 --eval-batches 1 --checkpoint-every 0"
median_tok_s() { jq -s -r '[.[] | select(.tokens_per_s != null and .step > 2) | .tokens_per_s] | sort | .[length / 2 | floor]' "$1/metrics.jsonl"; }
for round in 1 2; do
  # shellcheck disable=SC2086
  /usr/bin/time -f "peak %M KB" "$BIN" train $model --threads 2 --out "$tmp/one$round" > "$tmp/one$round.log" 2>&1
  # shellcheck disable=SC2086
  mpirun --oversubscribe -np 2 --bind-to none /usr/bin/time -f "peak %M KB" "$BIN" train $model --threads 1 \
    --context-parallel 2 --out "$tmp/cp$round" > "$tmp/cp$round.log" 2>&1
  one=$(median_tok_s "$tmp/one$round"); cp=$(median_tok_s "$tmp/cp$round")
  bytes=$(jq -s -r '[.[] | select(.context_bytes != null) | .context_bytes] | unique | map(tostring) | join(",")' "$tmp/cp$round/metrics.jsonl")
  rss_one=$(grep -o 'peak [0-9]* KB' "$tmp/one$round.log" | grep -o '[0-9]*' | sort -n | tail -1)
  rss_cp=$(grep -o 'peak [0-9]* KB' "$tmp/cp$round.log" | grep -o '[0-9]*' | sort -n | tail -1)
  jq -n -c --arg mech "$mech" --argjson ctx "$ctx" --argjson one "$one" --argjson cp "$cp" --arg bytes "$bytes" \
    --argjson round "$round" --argjson rss_one "$rss_one" --argjson rss_cp "$rss_cp" \
    --argjson formula "$((layers * 2 * batch * heads * r * (r + 1) / 2 * (width / heads + 1) * 4))" \
    '{round: $round, mechanism: $mech, context: $ctx, one_process_2_threads_tok_s: $one,
      two_ranks_1_thread_tok_s: $cp, ratio: ($cp / $one), context_bytes_per_step: $bytes,
      formula: $formula, peak_rss_mb_one_process: ($rss_one / 1024 | floor),
      peak_rss_mb_per_rank: ($rss_cp / 1024 | floor)}'
done
