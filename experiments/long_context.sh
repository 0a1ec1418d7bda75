#!/usr/bin/env bash
# Long-context study (docs/RESULTS.md, "Long context"): one model per attention mechanism and
# context length, trained on book-length documents for the same number of tokens (same data order,
# seed and schedule), then evaluated on whole held-back documents: perplexity at the training
# context and at 2x it, loss by position bucket (does the model use the long context?), wall time
# and tokens/s per run, validation loss against wall time (the equal-wall-clock reading).
#
# Usage: bash experiments/long_context.sh [OUT]        (default OUT: experiments/out/long)
# Resumable: a finished run (OUT/NAME.result.json) is skipped, a stopped one resumes bit-exactly
# from its last checkpoint (`train --resume`). Run it again after an interruption.
# Environment: BIN (default: a copy of build/release/polysketch made once in OUT/bin, so that
#   rebuilding the tree does not change a study in progress), TOKENS (per run, default 2000000),
#   CONTEXTS ("4096 1024"), MECHANISMS ("softmax polynomial polysketch-local
#   polysketch-learned-local"), LAYERS (4), WIDTH (256), HEADS (4), TOKENS_PER_STEP (8192),
#   LR (2e-3), BLOCK (256), THREADS (0: all cores), EXTRA (more rows: "name|flags" lines, run at
#   the first context; a row may set its own --block), EXTEND (mechanisms whose model from the last context is extended to the
#   first with a tenth of the tokens: `train --init`).
# Corpus: C. H. Spurgeon's Treasury of David (Debian sword-comm-tdavid, dumped by libsword-utils'
# mod2imp, markup stripped) cut into 10 documents of 15 Psalms each (book-length: ~250k tokens
# each), plus the King James Bible as one document; validation is the last document (Psalms
# 136-150), held back whole (`prepare --val-input`).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/out/long}
TOKENS=${TOKENS:-2000000} CONTEXTS=${CONTEXTS:-"4096 1024"}
MECHANISMS=${MECHANISMS:-"softmax polynomial polysketch-local polysketch-learned-local"}
LAYERS=${LAYERS:-4} WIDTH=${WIDTH:-256} HEADS=${HEADS:-4} TOKENS_PER_STEP=${TOKENS_PER_STEP:-8192}
LR=${LR:-2e-3} BLOCK=${BLOCK:-256} THREADS=${THREADS:-0}
mkdir -p "$out/bin" "$out/corpus"
if [ -z "${BIN:-}" ]; then
  [ -x "$out/bin/polysketch" ] || { [ -x build/release/polysketch ] || bash scripts/build.sh release; cp build/release/polysketch "$out/bin/polysketch"; }
  BIN=$out/bin/polysketch
fi
for tool in mod2imp bible jq; do
  command -v $tool > /dev/null || { echo "error: $tool is missing (bash scripts/install-deps.sh --experiments)" >&2; exit 1; }
done

# The corpus: Treasury of David by Psalm groups, and the KJV.
corpus=$out/corpus
if [ ! -f "$corpus/done" ]; then
  mkdir -p "$corpus/train" "$corpus/val"
  mod2imp TDavid 2>/dev/null | awk -v dir="$corpus" '
    /^\$\$\$Psalms / { split($2, a, ":"); ps = a[1] + 0; next }
    /^\$\$\$/ { next }
    { g = ps == 0 ? 0 : int((ps - 1) / 15); f = sprintf("%s/%s/tdavid-%02d.txt", dir, g == 9 ? "val" : "train", g + 1)
      gsub(/<div eID="[^"]*" type="x-p"\/>/, "\n"); gsub(/<[^>]*>/, ""); gsub(/&amp;/, "\\&"); gsub(/&gt;/, ">")
      print > f }'
  bible 'Gen1:1-Rev22:21' > "$corpus/train/kjv.txt"
  touch "$corpus/done"
fi
data=$out/data
[ -f "$data/meta.json" ] || "$BIN" prepare --input "$corpus/train" --val-input "$corpus/val" --out "$data" --threads "$THREADS"

# run NAME CONTEXT FLAGS...: train (or resume) and evaluate one model; writes OUT/NAME.result.json.
# RUN_TOKENS and RUN_WARMUP (environment) override TOKENS and the warm-up of 30 steps; with
# --init among the flags the model comes from that checkpoint (no model flags are passed).
run() {
  local name=$1 context=$2; shift 2
  local dir=$out/$name result=$out/$name.result.json
  [ -f "$result" ] && { echo "== $name: done" >&2; return 0; }
  local tokens=${RUN_TOKENS:-$TOKENS} warmup=${RUN_WARMUP:-30} steps batch model=()
  steps=$(( (tokens + TOKENS_PER_STEP - 1) / TOKENS_PER_STEP )) batch=$((TOKENS_PER_STEP / context))
  if [[ " $* " != *" --init "* ]]; then
    model=(--layers "$LAYERS" --width "$WIDTH" --heads "$HEADS")
    [[ " $* " == *" --block "* ]] || model+=(--block "$BLOCK")  # a row's own --block replaces BLOCK
  fi
  echo "== $name: context $context, $steps steps of $batch x $context tokens, $* " >&2
  local start
  start=$(date +%s.%N)
  if [ -f "$dir/latest/state.json" ]; then
    "$BIN" train --resume "$dir" --out "$dir" --threads "$THREADS" >> "$dir.train.log" 2>&1
  else
    rm -rf "$dir"
    "$BIN" train --data "$data" --out "$dir" "$@" "${model[@]}" \
      --context "$context" --batch "$batch" --steps "$steps" --warmup "$warmup" --lr "$LR" \
      --eval-every 25 --eval-batches 4 --checkpoint-every 25 --keep 1 --seed 1 --threads "$THREADS" \
      > "$dir.train.log" 2>&1
  fi
  local last
  last=$(jq -s '[.[] | select(.loss != null) | .step] | max // 0' "$dir/metrics.jsonl")
  [ "$last" = "$steps" ] || { echo "$name stopped at step $last of $steps (see $dir.train.log)" >&2; return 1; }
  "$BIN" eval --checkpoint "$dir" --data "$data" --context "$context,$((2 * context))" --batch 2 \
    --batches 8 --by-position --threads "$THREADS" --json > "$dir.eval.jsonl"
  # Training time: the sum of the steps' own times (validation, checkpoints and restarts excluded),
  # from the last record of each step (a resume repeats the steps after its checkpoint).
  jq -c -s --arg name "$name" --arg flags "$*" --argjson context "$context" --argjson steps "$steps" \
    --argjson tokens "$((steps * TOKENS_PER_STEP))" --argjson tps "$TOKENS_PER_STEP" --slurpfile metrics "$dir/metrics.jsonl" \
    '($metrics | map(select(.loss != null)) | group_by(.step) | map(last)
       | reduce .[] as $m ([]; . + [{step: $m.step, t: ((if length > 0 then .[-1].t else 0 end) + $tps / $m.tokens_per_s)}])) as $time
     | ($time | map({key: (.step | tostring), value: .t}) | from_entries) as $at
     | {name: $name, flags: $flags, context: $context, steps: $steps, tokens: $tokens,
        train_s: $time[-1].t, tokens_per_s: ($tokens / $time[-1].t),
        val_curve: [$metrics[] | select(.val_loss != null) | {step, train_s: $at[.step | tostring], val_loss}],
        eval: .}' "$dir.eval.jsonl" > "$result.tmp"
  mv "$result.tmp" "$result"
  echo "   $(jq -c '{name, tokens_per_s, ppl: [.eval[] | {context, perplexity}]}' "$result")" >&2
}

first=${CONTEXTS%% *}
for context in $CONTEXTS; do
  for m in $MECHANISMS; do
    flags=(--mechanism "$m")
    [ "$m" = polynomial ] && flags+=(--p 4)
    run "$m-$context" "$context" "${flags[@]}"
  done
  if [ "$context" = "$first" ] && [ -n "${EXTRA:-}" ]; then
    while IFS='|' read -r name flags; do
      [ -n "$name" ] || continue
      # shellcheck disable=SC2086
      run "$name-$context" "$context" $flags
    done <<< "$EXTRA"
  fi
done
# Context extension: each EXTEND mechanism's model trained at the last context, fine-tuned at the
# first for a tenth of the tokens (`train --init`): the cheap route to a long-context model.
last=${CONTEXTS##* }
for m in ${EXTEND:-}; do
  [ -f "$out/$m-$last.result.json" ] || { echo "== $m-${last}to$first: $m-$last has not finished" >&2; continue; }
  RUN_TOKENS=$((TOKENS / 10)) RUN_WARMUP=5 run "$m-${last}to$first" "$first" --init "$out/$m-$last"
done
jq -c -s '.' "$out"/*.result.json > "$out/results.json"
echo "results: $out/results.json" >&2
