#!/usr/bin/env bash
# End to end through the `polysketch` binary: prepare (default KJV corpus), a few training steps of
# a tiny model, Ctrl-C-free resume, eval, generate; and clear errors with exit status 1 on bad input.
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*"; exit 1; }
expect_fail() {  # expect_fail "needle" cmd...
  local needle=$1; shift
  if "$@" >"$tmp/out" 2>&1; then echo "FAIL: expected an error from: $*"; exit 1; fi
  grep -q -- "$needle" "$tmp/out" || { echo "FAIL: '$needle' not in:"; cat "$tmp/out"; exit 1; }
}

$bin prepare --out "$tmp/data" --vocab-size 512 | tee "$tmp/prep"
grep -q "King James Bible" "$tmp/prep"
tiny=(--layers 1 --width 32 --heads 2 --context 32 --r 8 --block 8 --batch 2 --eval-batches 1)
$bin train --data "$tmp/data" --out "$tmp/run" "${tiny[@]}" --steps 4 --checkpoint-every 2 --keep 5 2>/dev/null | tee "$tmp/train"
grep -q "unigram baseline" "$tmp/train"
test -L "$tmp/run/latest" && test -f "$tmp/run/step-00000004/model.safetensors"
# Document masking: on by default for data with document boundaries (the KJV: 4 + 4 spans), saved
# with the run; refused clearly for data without them.
$bin train --data "$tmp/data" --out "$tmp/dm" "${tiny[@]}" --steps 1 > "$tmp/dm.log" 2>&1
grep -q "in 4 / 4 documents, document masking on" "$tmp/dm.log" || fail "document masking auto"
jq -e '.options.document_mask == "auto"' "$tmp/dm/latest/state.json" > /dev/null || fail "document_mask saved"
$bin prepare --task mqar --length 32 --examples 20 --val-examples 4 --out "$tmp/task" > /dev/null
expect_fail "records no document boundaries" $bin train --data "$tmp/task" --out "$tmp/dm2" "${tiny[@]}" --steps 1 --document-mask on
expect_fail "auto, on or off" $bin train --data "$tmp/data" --out "$tmp/dm3" "${tiny[@]}" --steps 1 --document-mask yes
$bin eval --checkpoint "$tmp/dm" --data "$tmp/data" --batch 2 --batches 1 --document-mask off > /dev/null
$bin train --out "$tmp/resumed" --resume "$tmp/run/step-00000002" 2>/dev/null | tee "$tmp/resume"
grep -q "^step 4:" "$tmp/resume"
$bin eval --checkpoint "$tmp/run" --data "$tmp/data" --context 16,32 --batch 2 --batches 1 | tee "$tmp/eval"
test "$(grep -c perplexity "$tmp/eval")" = 2
$bin generate --checkpoint "$tmp/run" --prompt "In the beginning" --max-tokens 5 --seed 3 > "$tmp/g1"
$bin generate --checkpoint "$tmp/run" --prompt "In the beginning" --max-tokens 5 --seed 3 > "$tmp/g2"
cmp "$tmp/g1" "$tmp/g2"  # same seed, same text
# A decoding-state snapshot continues exactly: 6 + 6 greedy tokens through a file = 12 at once.
$bin generate --checkpoint "$tmp/run" --prompt "In the beginning" --max-tokens 12 --temperature 0 2>/dev/null > "$tmp/g12"
$bin generate --checkpoint "$tmp/run" --prompt "In the beginning" --max-tokens 6 --temperature 0 --save-state "$tmp/s.bin" 2>/dev/null > "$tmp/g6"
$bin generate --checkpoint "$tmp/run" --load-state "$tmp/s.bin" --max-tokens 6 --temperature 0 2>"$tmp/g6b.err" > "$tmp/g6b"
grep -q "decode: 6 tokens" "$tmp/g6b.err"
[ "$(tr -d '\n ' < "$tmp/g6")$(tr -d '\n ' < "$tmp/g6b")" = "$(tr -d '\n ' < "$tmp/g12")" ] || { echo "FAIL: snapshot continuation differs"; exit 1; }

# Ctrl-C: saves a checkpoint and exits cleanly (status 0).
$bin train --data "$tmp/data" --out "$tmp/int" "${tiny[@]}" --steps 1000000 > "$tmp/int.log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q "^step [1-9]" "$tmp/int.log" 2>/dev/null && break; sleep 0.2; done
kill -INT $pid
wait $pid
grep -q "interrupted" "$tmp/int.log"
test -f "$tmp/int/latest/model.safetensors"

# --init: fine-tuning starts from a checkpoint's weights, here at a shorter context.
$bin train --data "$tmp/data" --out "$tmp/tuned" --init "$tmp/run" --context 16 --steps 2 --batch 2 --eval-batches 1 > /dev/null 2>&1
jq -e '.initialized_from | endswith("step-00000004")' "$tmp/tuned/latest/state.json" > /dev/null || fail "train --init"
jq -e '.context == 16' "$tmp/tuned/latest/config.json" > /dev/null || fail "train --init --context"
# --tokenizer: an existing model (from a data directory or a run) instead of training one; the
# same corpus then gives the same shards.
$bin prepare --out "$tmp/data2" --tokenizer "$tmp/data" > /dev/null
cmp "$tmp/data/tokenizer.model" "$tmp/data2/tokenizer.model" && cmp "$tmp/data/train.bin" "$tmp/data2/train.bin"
bible 'Gen1:1-Exo20:1' > "$tmp/genexo.txt"
$bin prepare --out "$tmp/data3" --tokenizer "$tmp/run" --input "$tmp/genexo.txt" > /dev/null
cmp "$tmp/data/tokenizer.model" "$tmp/data3/tokenizer.model"
expect_fail "no tokenizer.model" $bin prepare --out "$tmp/x" --tokenizer "$tmp"
expect_fail "excludes" $bin prepare --out "$tmp/x" --tokenizer "$tmp/data" --vocab-size 100
# eval --input: raw text through the checkpoint's tokenizer.
bible 'Rev1:1-Rev5:1' > "$tmp/rev.txt"
$bin eval --checkpoint "$tmp/run" --input "$tmp/rev.txt" --batch 2 --batches 2 --json > "$tmp/evin"
jq -e '.scored == 128 and .loss > 0' "$tmp/evin" > /dev/null || fail "eval --input"
# --by-position: the buckets' losses average, weighted by their tokens, to the overall loss.
$bin eval --checkpoint "$tmp/run" --input "$tmp/rev.txt" --context 100 --batch 2 --batches 2 --by-position --json > "$tmp/bypos"
jq -e '([.by_position[] | .end] == [64, 100]) and ((([.by_position[] | .loss * .scored] | add) / .scored - .loss) | fabs < 1e-4)' "$tmp/bypos" > /dev/null || { cat "$tmp/bypos"; fail "eval --by-position"; }
# eval --chunk: the same scores a chunk at a time (the run's block is 8); refused where it cannot apply.
$bin eval --checkpoint "$tmp/run" --input "$tmp/rev.txt" --context 96 --batch 2 --batches 2 --by-position --json > "$tmp/whole"
$bin eval --checkpoint "$tmp/run" --input "$tmp/rev.txt" --context 96 --batch 2 --batches 2 --by-position --json --chunk 16 > "$tmp/chunked"
jq -e -s '(.[0].scored == .[1].scored) and ((.[0].loss - .[1].loss) | fabs < 1e-4) and ((.[0].by_position[1].loss - .[1].by_position[1].loss) | fabs < 1e-4)' "$tmp/whole" "$tmp/chunked" > /dev/null || fail "eval --chunk"
expect_fail "whole number of blocks" $bin eval --checkpoint "$tmp/run" --input "$tmp/rev.txt" --context 96 --chunk 12
# ... under document masking too (eight short documents, several per window): the same scores,
# and not those of the unmasked windows.
mkdir -p "$tmp/ruth"
for c in 1 2 3 4; do for v in 1 5; do bible "Rut$c:$v-Rut$c:$((v + 1))" > "$tmp/ruth/$c-$v.txt"; done; done
for chunk in 0 16; do
  $bin eval --checkpoint "$tmp/run" --input "$tmp/ruth" --context 96 --batch 2 --batches 2 --by-position --json --document-mask on --chunk $chunk > "$tmp/docs-$chunk"
done
$bin eval --checkpoint "$tmp/run" --input "$tmp/ruth" --context 96 --batch 2 --batches 2 --json --document-mask off > "$tmp/docs-off"
jq -e -s '(.[0].scored == .[1].scored) and ((.[0].loss - .[1].loss) | fabs < 1e-4) and
  ([.[0].by_position[] | .scored] == [.[1].by_position[] | .scored]) and
  ((.[0].by_position[1].loss - .[1].by_position[1].loss) | fabs < 1e-4) and
  ((.[0].loss - .[2].loss) | fabs > 1e-5)' "$tmp/docs-0" "$tmp/docs-16" "$tmp/docs-off" > /dev/null ||
  { cat "$tmp/docs-0" "$tmp/docs-16" "$tmp/docs-off"; fail "eval --chunk --document-mask on"; }
expect_fail "one of them" $bin eval --checkpoint "$tmp/run"
expect_fail "excludes" $bin eval --checkpoint "$tmp/run" --data "$tmp/data" --input "$tmp/rev.txt"
printf 'ab\0cd' > "$tmp/binary.txt"
expect_fail "NUL byte" $bin prepare --input "$tmp/binary.txt" --out "$tmp/x"
expect_fail "cannot read" $bin prepare --input "$tmp/missing.txt" --out "$tmp/x"
# A folder of text, markdown and gzipped JSONL; a bad record names its file and line.
mkdir -p "$tmp/docs/sub"
bible 'Gen1:1-Gen20:1' > "$tmp/docs/genesis.txt"
bible 'Exo1:1-Exo10:1' | jq -R -c '{text: .}' | gzip > "$tmp/docs/sub/exodus.jsonl.gz"
echo '# not taken' > "$tmp/docs/sub/skip.rst"
$bin prepare --input "$tmp/docs" --out "$tmp/fdata" --vocab-size 400 | tee "$tmp/fprep"
grep -q "document(s) from 2 file(s)" "$tmp/fprep" || fail "folder input"
printf '{"text": "fine"}\n{"txt": "no field"}\n' > "$tmp/bad.jsonl"
expect_fail 'bad.jsonl:2: expected a JSON object with a string field "text"' $bin prepare --input "$tmp/bad.jsonl" --out "$tmp/x"
expect_fail "unknown attention mechanism 'flash'" $bin bench-attention --mechanism flash
# bench-decode --concurrent: two threads decoding two sequences on one model give the tokens of
# one thread decoding them in turn (the command fails otherwise).
$bin bench-decode --mechanism polysketch-learned-local,softmax --context 20 --batch 1 --decode 8 --layers 1 --width 32 --heads 2 --vocab 50 --r 8 --block 8 --concurrent 2 --json > "$tmp/conc"
test "$(jq -s 'map(select(.concurrent_sequences == 2 and .identical_tokens)) | length' "$tmp/conc")" = 2 || fail "bench-decode --concurrent"
# bench-gemm: every product measured on the four backend/precision/kernel columns
$bin bench-gemm --n 64 --width 64 --heads 4 --vocab 64 --r 4 --block 16 --repeat 1 --json > "$tmp/gemm"
[ "$(jq -s 'length' "$tmp/gemm")" -eq 14 ] || { echo "FAIL: bench-gemm rows"; cat "$tmp/gemm"; exit 1; }
jq -e -s 'all(.[]; .openblas_f32_gflops > 0 and .onednn_f32_gflops > 0 and .bf16_gflops > 0 and .bf16_no_kernel_gflops > 0)' "$tmp/gemm" >/dev/null
POLYSKETCH_BF16_KERNEL=off $bin bench-attention --mechanism softmax --n 64 --head-dim 16 --heads 2 --repeat 1 --precision bf16 --json > /dev/null
expect_fail "POLYSKETCH_BF16_KERNEL='maybe': expected on or off" env POLYSKETCH_BF16_KERNEL=maybe $bin bench-gemm --n 64
# bf16 runs where it pays, else f32 products with one line saying so; the rows say what ran.
bt="bench-train --mechanism polysketch --n 64 --layers 1 --width 32 --heads 2 --r 8 --block 16 --vocab 50 --repeat 1 --warmup 0 --json"
# shellcheck disable=SC2086
$bin $bt --precision bf16 > "$tmp/bt" 2> "$tmp/bt.err"
pays=$(jq -r '.bf16_pays' <(head -1 "$tmp/gemm"))
ran=$(jq -r '.precision' "$tmp/bt")
jq -e '.precision_requested == "bf16" and (.openblas_core | length > 0)' "$tmp/bt" >/dev/null || fail "bench-train fields"
if [ "$ran" = f32 ]; then grep -q "^--precision bf16: bf16 products are not faster than f32 on this CPU" "$tmp/bt.err" || fail "no note for f32 products"
else [ "$ran" = bf16 ] && [ ! -s "$tmp/bt.err" ] || fail "precision '$ran', stderr: $(cat "$tmp/bt.err")"; fi
echo "bf16 on this machine: ran $ran (bench-gemm: bf16_pays $pays)"
# shellcheck disable=SC2086
POLYSKETCH_BF16=always $bin $bt --precision bf16 | jq -e '.precision == "bf16"' >/dev/null || fail "POLYSKETCH_BF16=always"
# shellcheck disable=SC2086
expect_fail "POLYSKETCH_BF16='yes': expected auto or always" env POLYSKETCH_BF16=yes $bin $bt --precision bf16
expect_fail "does not exist" $bin eval --checkpoint "$tmp/none" --data "$tmp/data"
head -c 100 "$tmp/run/latest/model.safetensors" > "$tmp/trunc" && cp -r "$tmp/run/step-00000004" "$tmp/bad"
cp "$tmp/trunc" "$tmp/bad/model.safetensors"
expect_fail "model.safetensors" $bin generate --checkpoint "$tmp/bad" --prompt x
expect_fail "wrong magic" bash -c "printf 'XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX' > '$tmp/data/val.bin'; $bin eval --checkpoint '$tmp/run' --data '$tmp/data'"
printf 'garbage' > "$tmp/bad.bin"
expect_fail "not a polysketch decoding state" $bin generate --checkpoint "$tmp/run" --load-state "$tmp/bad.bin"
echo "cli smoke: all checks passed"
