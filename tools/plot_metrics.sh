#!/usr/bin/env bash
# Training curves: one or several metrics.jsonl files (written by `polysketch train`) -> a PNG with
# training loss (thin) and validation loss (points) against step, one colour per run.
# Usage: tools/plot_metrics.sh OUT.png RUN_DIR_OR_METRICS_FILE...   (VAL_ONLY=1: validation only)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUT.png METRICS.jsonl|RUN_DIR..." >&2; exit 2; }
source "$(dirname "$0")/ensure_plot_tools.sh"
out=$1; shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plot=""
i=0
for src in "$@"; do
  [ -d "$src" ] && src="$src/metrics.jsonl"
  [ -r "$src" ] || { echo "error: cannot read $src" >&2; exit 1; }
  i=$((i + 1))
  name=$(basename "$(dirname "$src")")
  jq -r 'select(.loss != null) | "\(.step) \(.loss)"' "$src" > "$tmp/train$i.dat"
  jq -r 'select(.val_loss != null) | "\(.step) \(.val_loss)"' "$src" > "$tmp/val$i.dat"
  [ -n "${VAL_ONLY:-}" ] || plot+="${plot:+, }'$tmp/train$i.dat' using 1:2 with lines lc $i lw 1 title '$name train'"
  plot+="${plot:+, }'$tmp/val$i.dat' using 1:2 with linespoints lc $i lw 2 pt 7 title '$name validation'"
done
gnuplot <<GP
set terminal pngcairo size 900,600 noenhanced
set output '$out'
set xlabel 'step'
set ylabel 'loss (nats/token)'
set grid
plot $plot
GP
echo "wrote $out"
