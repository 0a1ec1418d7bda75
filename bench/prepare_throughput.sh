#!/usr/bin/env bash
# `polysketch prepare` throughput on a large corpus against Debian's `spm_encode` (sentencepiece's
# own command-line encoder), same tokenizer model and same text, in one run (docs/BENCHMARKS.md,
# "Preparing a corpus").
#
# Usage: bash bench/prepare_throughput.sh [OUT]          (default OUT: experiments/out/prepare)
# Environment: SIZE_MB (corpus size, default 1024), THREADS ("1 2": prepare's thread counts),
#   ROUNDS (2), BIN. The corpus is the KJV and Spurgeon's Treasury of David (Debian bible-kjv,
#   sword-comm-tdavid) repeated as separate files until SIZE_MB; it is made once and kept in OUT.
# Writes OUT/results.jsonl: one object per timed command (tool, threads, seconds, MB/s, peak RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/out/prepare}
SIZE_MB=${SIZE_MB:-1024} THREADS=${THREADS:-"1 2"} ROUNDS=${ROUNDS:-2}
BIN=${BIN:-build/release/polysketch}
for tool in spm_encode mod2imp bible jq /usr/bin/time; do
  command -v $tool > /dev/null || { echo "error: $tool is missing (bash scripts/install-deps.sh --experiments)" >&2; exit 1; }
done
mkdir -p "$out/corpus"
if [ ! -f "$out/corpus.done" ]; then
  bible 'Gen1:1-Rev22:21' > "$out/seed.txt"
  mod2imp TDavid 2>/dev/null | sed -e 's/<div eID="[^"]*" type="x-p"\/>/\n/g' -e 's/<[^>]*>//g' >> "$out/seed.txt"
  seed_bytes=$(stat -c %s "$out/seed.txt")
  copies=$(( (SIZE_MB * 1000000 + seed_bytes - 1) / seed_bytes ))
  for i in $(seq -w 1 "$copies"); do cp "$out/seed.txt" "$out/corpus/part-$i.txt"; done
  touch "$out/corpus.done"
fi
bytes=$(du -cb "$out"/corpus/*.txt | tail -1 | cut -f1)
# The tokenizer both tools use: trained once on the seed text.
[ -f "$out/tok/tokenizer.model" ] || "$BIN" prepare --input "$out/seed.txt" --out "$out/tok" > /dev/null
model=$out/tok/tokenizer.model
: > "$out/results.jsonl"
record() {  # record TOOL THREADS -- command...
  local tool=$1 threads=$2; shift 3
  sync
  /usr/bin/time -f '%e %M' -o "$out/time.txt" "$@" > /dev/null 2> "$out/err.txt" || { cat "$out/err.txt" >&2; exit 1; }
  read -r secs rss_kb < "$out/time.txt"
  jq -n -c --arg tool "$tool" --argjson threads "$threads" --argjson secs "$secs" --argjson rss "$rss_kb" \
    --argjson bytes "$bytes" '{tool: $tool, threads: $threads, seconds: $secs, mb: ($bytes / 1e6),
      mb_per_s: ($bytes / 1e6 / $secs), peak_rss_mb: ($rss / 1024)}' | tee -a "$out/results.jsonl"
}
spm() { cat "$out"/corpus/*.txt | spm_encode --model "$model" --output_format id; }
for round in $(seq "$ROUNDS"); do  # interleaved: each round runs every command once
  echo "round $round of $ROUNDS ($((bytes / 1000000)) MB)" >&2
  record spm_encode 1 -- bash -c "$(declare -f spm); out='$out' model='$model' spm"
  for t in $THREADS; do
    rm -rf "$out/data"
    record "polysketch prepare" "$t" -- "$BIN" prepare --input "$out/corpus" --tokenizer "$model" \
      --out "$out/data" --threads "$t"
  done
done
