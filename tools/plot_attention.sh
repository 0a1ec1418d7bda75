#!/usr/bin/env bash
# docs/bench/scaling.jsonl -> docs/bench/attention_fwd_bwd.png: seconds vs n (log-log), one line
# per mechanism, forward+backward. Needs jq and gnuplot (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/ensure_plot_tools.sh
src=${1:-docs/bench/scaling.jsonl}
dst=${2:-docs/bench/attention_fwd_bwd.png}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plot=""
for m in $(jq -r 'select(.pass=="fwd+bwd") | .mechanism' "$src" | awk '!seen[$0]++'); do
  jq -r --arg m "$m" 'select(.pass=="fwd+bwd" and .mechanism==$m) | "\(.n) \(.seconds)"' "$src" \
    > "$tmp/$m.dat"
  plot+="${plot:+, }'$tmp/$m.dat' using 1:2 with linespoints lw 2 title '$m'"
done
gnuplot <<GP
set terminal pngcairo size 900,600 noenhanced
set output '$dst'
set logscale xy 2
set xlabel 'context length n'
set ylabel 'seconds (forward + backward)'
set title 'Attention fwd+bwd, causal, batch 1, 12 heads, h 64, r 32, b 256, 2 threads'
set key top left
set grid
plot $plot
GP
echo "wrote $dst"
