#!/usr/bin/env bash
# Quality study on text (docs/RESULTS.md): one model trained with each attention mechanism, with
# identical data order, tokens, steps, schedule and seed; validation perplexity at the training
# context and at 4x it (length generalisation); the random sketch's error against exact
# polynomial attention inside the trained models (`eval --sketch-error`).
#
# Usage: bash experiments/quality_text.sh [OUT]        (default OUT: experiments/out/text)
# Environment: DATA (a `polysketch prepare` directory; default data/kjv, prepared if missing),
#   STEPS (800), LAYERS (4), WIDTH (256), HEADS (4), CONTEXT (256), BATCH (8), LR (2e-3),
#   THREADS (0: all cores), ONLY (space-separated names of the rows below to run), BIN.
# About 90 minutes on the 2-core development machine with the defaults; STEPS scales it.
# Writes OUT/RUN-NAME/ (the runs), OUT/results.jsonl (one object per mechanism),
# OUT/results.md (the table) and OUT/validation_curves.png.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/out/text}
BIN=${BIN:-build/release/polysketch}
DATA=${DATA:-data/kjv}
STEPS=${STEPS:-800} LAYERS=${LAYERS:-4} WIDTH=${WIDTH:-256} HEADS=${HEADS:-4}
CONTEXT=${CONTEXT:-256} BATCH=${BATCH:-8} LR=${LR:-2e-3} THREADS=${THREADS:-0}
source tools/ensure_plot_tools.sh
[ -x "$BIN" ] || bash scripts/build.sh release
[ -f "$DATA/train.bin" ] || "$BIN" prepare --out "$DATA"
mkdir -p "$out"

# name | mechanism and its flags (the sketches: r = 32; the block algorithm's b = 64)
rows="softmax|--mechanism softmax
polynomial-p4|--mechanism polynomial --p 4
polynomial-p8|--mechanism polynomial --p 8
polysketch|--mechanism polysketch --p 4 --r 32
polysketch-local|--mechanism polysketch-local --p 4 --r 32
polysketch-learned|--mechanism polysketch-learned --p 4 --r 32
polysketch-learned-local|--mechanism polysketch-learned-local --p 4 --r 32"

while IFS='|' read -r name flags; do
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
  run="$out/$name"
  rm -rf "$run"
  echo "== $name: $flags" >&2
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$BIN" train --data "$DATA" --out "$run" $flags --layers "$LAYERS" --width "$WIDTH" \
    --heads "$HEADS" --context "$CONTEXT" --block 64 --batch "$BATCH" --steps "$STEPS" \
    --warmup 30 --lr "$LR" --eval-every 50 --eval-batches 8 --checkpoint-every 0 --seed 1 \
    --threads "$THREADS" > "$run.train.log" 2>&1
  wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  # Only a run that trained every step is a result (a stopped run saves a checkpoint too).
  last=$(jq -s '[.[] | select(.loss != null) | .step] | max // 0' "$run/metrics.jsonl")
  [ "$last" = "$STEPS" ] || { echo "$name stopped at step $last of $STEPS (see $run.train.log)" >&2; exit 1; }
  extra=""
  case $name in polysketch|polysketch-local|polysketch-learned|polysketch-learned-local) extra=--sketch-error ;; esac
  "$BIN" eval --checkpoint "$run" --data "$DATA" --context "$CONTEXT,$((4 * CONTEXT))" --batches 16 \
    --threads "$THREADS" --json $extra > "$run.eval.jsonl"
  params=$(grep -o '^model: [0-9]*' "$run.train.log" | grep -o '[0-9]*$')
  jq -c -s --arg name "$name" --arg flags "$flags" --argjson steps "$STEPS" \
    --argjson tokens "$((STEPS * BATCH * CONTEXT))" --argjson wall "$wall" --argjson params "$params" \
    '{name: $name, flags: $flags, params: $params, steps: $steps, tokens: $tokens,
      wall_s: $wall, tokens_per_s: ($tokens / $wall), eval: .}' "$run.eval.jsonl" > "$run.result.json"
done <<< "$rows"

# Every mechanism run so far (ONLY reruns some), in the order of the rows.
results="$out/results.jsonl"
: > "$results"
while IFS='|' read -r name _; do
  [ -f "$out/$name.result.json" ] && cat "$out/$name.result.json" >> "$results"
done <<< "$rows"

# The table, with ratios to softmax's perplexity.
jq -r -s '
  (map(select(.name == "softmax")) | first | .eval[0].perplexity) as $soft |
  "| mechanism | parameters | steps | tokens | wall time | tokens/s | val. perplexity | ratio to softmax | perplexity at 4x context | next-token accuracy | sketch error (per layer) |",
  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  (.[] | "| \(.name) | \(.params) | \(.steps) | \(.tokens) | \(.wall_s / 60 * 10 | round / 10) min | \(.tokens_per_s | round) | \(.eval[0].perplexity * 100 | round / 100) | \(if $soft then (.eval[0].perplexity / $soft * 1000 | round / 1000) else "-" end) | \(.eval[1].perplexity * 100 | round / 100) | \(.eval[0].accuracy * 1000 | round / 1000) | \(if .eval[0].sketch_error then (.eval[0].sketch_error | map(. * 100 | round / 100 | tostring) | join(" ")) else "-" end) |")
' "$results" > "$out/results.md"
cat "$out/results.md"
runs=()
for r in $(jq -r '.name' "$results"); do runs+=("$out/$r"); done
VAL_ONLY=1 bash tools/plot_metrics.sh "$out/validation_curves.png" "${runs[@]}"
