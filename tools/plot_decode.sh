#!/usr/bin/env bash
# docs/bench/decode.jsonl -> docs/bench/decode_tokens_per_s.png: decode tokens/s vs context
# (log-log), one line per mechanism and batch. Needs jq and gnuplot (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/ensure_plot_tools.sh
src=${1:-docs/bench/decode.jsonl}
dst=${2:-docs/bench/decode_tokens_per_s.png}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plot=""
for key in $(jq -r 'select(.decode_tokens_per_s) | "\(.mechanism)@\(.batch)"' "$src" | awk '!seen[$0]++'); do
  m=${key%@*} b=${key#*@}
  jq -r --arg m "$m" --argjson b "$b" \
    'select(.mechanism==$m and .batch==$b and .decode_tokens_per_s) | "\(.context) \(.decode_tokens_per_s)"' \
    "$src" > "$tmp/$key.dat"
  plot+="${plot:+, }'$tmp/$key.dat' using 1:2 with linespoints lw 2 title '$m, batch $b'"
done
gnuplot <<GP
set terminal pngcairo size 900,600 noenhanced
set output '$dst'
set logscale xy 2
set xlabel 'context length (tokens already in the state)'
set ylabel 'decode tokens/s (all sequences together)'
set title 'bench-decode: 4 layers, width 768, 12 heads, vocab 4096, r 32, b 256, 2 threads'
set key bottom left
set grid
plot $plot
GP
echo "wrote $dst"
