#!/usr/bin/env bash
# Synthetic in-context tasks (docs/RESULTS.md): a small model (2 layers, width 64, 2 heads) trained
# with each mechanism on selective copying, induction heads and multi-query associative recall
# (MQAR, with the number of key-value pairs swept), at sequence lengths 256 and 1024; accuracy on
# the answer positions of held-out examples.
#
# Usage: bash experiments/quality_synthetic.sh [OUT]   (default OUT: experiments/out/synthetic)
# Environment: STEPS (1200), BATCH (16 sequences of 256; 1024-token tasks use BATCH/4), LRS
#   (learning rates swept per task and mechanism, "1e-2"; the table reports the best, the jsonl
#   every one), EXAMPLES (training examples per task, 20000), JOBS (2: runs side by side, one
#   thread each), TASKS (rows below by name), MECHANISMS, BIN, FORCE (1: rerun finished runs; by
#   default a rerun only completes the missing ones).
# About 30 minutes on the 2-core development machine with the defaults.
# Writes OUT/data/TASK/, OUT/runs/TASK/MECHANISM/, OUT/results.jsonl, OUT/results.md and
# OUT/synthetic_accuracy.png.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/out/synthetic}
BIN=${BIN:-build/release/polysketch}
STEPS=${STEPS:-1200} BATCH=${BATCH:-16} LRS=${LRS:-${LR:-1e-2}} EXAMPLES=${EXAMPLES:-20000} JOBS=${JOBS:-2}
MECHANISMS=${MECHANISMS:-softmax polynomial-p4 polynomial-p8 polysketch polysketch-local polysketch-learned polysketch-learned-local}
source tools/ensure_plot_tools.sh
[ -x "$BIN" ] || bash scripts/build.sh release
mkdir -p "$out/data" "$out/runs"

# task name | prepare flags
tasks="mqar-256-4|--task mqar --length 256 --items 4 --vocab-size 64
mqar-256-8|--task mqar --length 256 --items 8 --vocab-size 64
mqar-256-16|--task mqar --length 256 --items 16 --vocab-size 64
mqar-1024-4|--task mqar --length 1024 --items 4 --vocab-size 64
selective-copying-256|--task selective-copying --length 256 --items 8
selective-copying-1024|--task selective-copying --length 1024 --items 8
induction-heads-256|--task induction-heads --length 256
induction-heads-1024|--task induction-heads --length 1024"
selected=()
while IFS='|' read -r task flags; do
  if [ -n "${TASKS:-}" ] && [[ " $TASKS " != *" $task "* ]]; then continue; fi
  selected+=("$task")
  # shellcheck disable=SC2086
  [ -f "$out/data/$task/meta.json" ] || "$BIN" prepare $flags --examples "$EXAMPLES" --val-examples 500 --seed 1 --out "$out/data/$task" >/dev/null
done <<< "$tasks"

flags_of() {  # mechanism name -> train flags (the sketches: r = 32; blocks of 64)
  case $1 in
    polynomial-p4) echo "--mechanism polynomial --p 4" ;;
    polynomial-p8) echo "--mechanism polynomial --p 8" ;;
    *) echo "--mechanism $1 --p 4 --r 32" ;;
  esac
}

one_run() {  # task mechanism lr
  local task=$1 mech=$2 lr=$3 run="$out/runs/$1/$2-lr$3" len batch start wall
  # Finished runs are kept (rerunning the script completes a study); FORCE=1 reruns them.
  if [ -z "${FORCE:-}" ] && jq -e -s 'length == 1 and .[0].accuracy != null' "$run.result.json" >/dev/null 2>&1; then return; fi
  len=$(jq .length "$out/data/$task/meta.json")
  batch=$((len > 256 ? BATCH / 4 : BATCH))
  rm -rf "$run" && mkdir -p "$(dirname "$run")"
  start=$(date +%s.%N)
  # shellcheck disable=SC2046
  "$BIN" train --data "$out/data/$task" --out "$run" $(flags_of "$mech") --layers 2 --width 64 \
    --heads 2 --context "$len" --block 64 --batch "$batch" --steps "$STEPS" --warmup 100 --lr "$lr" \
    --eval-every 200 --eval-batches 8 --checkpoint-every 0 --seed 1 --threads 1 > "$run.log" 2>&1
  wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  # Only a run that trained every step is a result (a stopped run saves a checkpoint too).
  local last
  last=$(jq -s '[.[] | select(.loss != null) | .step] | max // 0' "$run/metrics.jsonl" 2>/dev/null || echo 0)
  if [ "$last" != "$STEPS" ]; then
    echo "$task $mech: stopped at step $last of $STEPS; no result recorded (see $run.log)" >&2
    return 0
  fi
  "$BIN" eval --checkpoint "$run" --data "$out/data/$task" --batch 50 --batches 10 --threads 1 --json |
    jq -c --arg task "$task" --arg mech "$mech" --argjson wall "$wall" --argjson steps "$STEPS" \
      --argjson batch "$batch" --argjson lr "$lr" --argjson examples "$EXAMPLES" \
      '{task: $task, mechanism: $mech, lr: $lr, steps: $steps, batch: $batch, examples: $examples,
        wall_s: $wall, accuracy, loss, scored}' > "$run.result.json"
  echo "$task $mech lr $lr: accuracy $(jq .accuracy "$run.result.json") (${wall}s)" >&2
}
export -f one_run flags_of
export out BIN STEPS BATCH EXAMPLES FORCE
for task in "${selected[@]}"; do for mech in $MECHANISMS; do for lr in $LRS; do
  echo "$task $mech $lr"; done; done; done |
  OMP_WAIT_POLICY=passive xargs -P "$JOBS" -L 1 bash -c 'one_run "$0" "$1" "$2"'

results="$out/results.jsonl"
jq -c 'select(.accuracy != null)' "$out"/runs/*/*.result.json > "$results"
# Table: one row per mechanism, one column per task (accuracy on the answers, best learning rate).
jq -r -s --arg mechs "$MECHANISMS" '
  (map(.task) | unique) as $tasks |
  "| mechanism | " + ($tasks | join(" | ")) + " |",
  "|---|" + ($tasks | map("---:") | join("|")) + "|",
  (($mechs | split(" "))[] as $m |
    "| \($m) | " + ([$tasks[] as $t | (map(select(.task == $t and .mechanism == $m)) | max_by(.accuracy) |
      if . then (.accuracy * 1000 | round / 1000 | tostring) else "-" end)] | join(" | ")) + " |")
' "$results" > "$out/results.md"
cat "$out/results.md"

# Plot: accuracy per task (x) for each mechanism (one line each; best learning rate).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
jq -r -s '(map(.task) | unique) as $t | $t | to_entries[] | "\(.key) \(.value)"' "$results" > "$tmp/tasks"
plot="" i=0
for m in $MECHANISMS; do
  i=$((i + 1))
  jq -r -s --arg m "$m" '(map(.task) | unique) as $t | map(select(.mechanism == $m)) | group_by(.task) | map(max_by(.accuracy))[] |
    . as $r | "\($t | index($r.task)) \($r.accuracy)"' "$results" | sort -n > "$tmp/$i.dat"
  plot+="${plot:+, }'$tmp/$i.dat' using 1:2 with linespoints lw 2 pt 7 title '$m'"
done
xtics=$(awk '{ printf "%s\"%s\" %s", (NR > 1 ? ", " : ""), $2, $1 }' "$tmp/tasks")
gnuplot <<GP
set terminal pngcairo size 1000,600 noenhanced
set output '$out/synthetic_accuracy.png'
set ylabel 'accuracy on the answers'
set yrange [0:1.05]
set xtics ($xtics) rotate by -20
set grid
set key outside right
plot $plot
GP
echo "wrote $out/synthetic_accuracy.png"
