#!/usr/bin/env bash
# Data parallelism under mpirun (OpenMPI, 2 ranks oversubscribed on one machine):
#  1. 2 ranks x --accum 1 compute the steps of 1 process x --accum 2: losses within 1e-5
#     (relative; the gradient sums are added in another order) and final weights within 1e-5
#     (the validation loss of both checkpoints);
#  2. repeated runs with the same ranks are bit-identical (model.safetensors byte for byte);
#  3. a run resumes with a different number of ranks (2 -> 1) and continues the same steps;
#     a rank count that cannot share the step's micro-batches is refused;
#  4. a killed rank ends the job with an error, and the last checkpoint loads.
set -euo pipefail
bin=$1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
# The automatic GEMM backend is chosen by timing, which load can flip between runs: pinned here
# so that repeated runs are comparable bit for bit.
export POLYSKETCH_GEMM=onednn
command -v mpirun >/dev/null || { echo "mpirun missing (openmpi-bin)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bible 'Gen1:1-Gen30:1' > "$tmp/text.txt"
"$bin" prepare --input "$tmp/text.txt" --out "$tmp/data" --vocab-size 400 >/dev/null
common="--data $tmp/data --layers 2 --width 32 --heads 2 --context 32 --r 8 --block 8 --batch 4
  --warmup 2 --eval-every 0 --eval-batches 2 --threads 1 --seed 3"
mpirun2="timeout 300 mpirun --oversubscribe -np 2"
fail() { echo "FAIL: $*"; exit 1; }
losses() { jq -r 'select(.loss != null) | "\(.step) \(.loss)"' "$1/metrics.jsonl"; }
close() {  # two files of "step value" lines agree within a relative 1e-5
  paste "$1" "$2" | awk '{ d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 1e-5 * ($2 < 0 ? -$2 : $2)) { print "differs: " $0; bad = 1 } } END { exit bad }'
}
val() { "$bin" eval --checkpoint "$1" --data "$tmp/data" --batches 2 --threads 1 --json | jq -r '"0 \(.loss)"'; }

# shellcheck disable=SC2086
"$bin" train $common --steps 8 --accum 2 --out "$tmp/one" >/dev/null 2>&1
# shellcheck disable=SC2086
$mpirun2 "$bin" train $common --steps 8 --accum 1 --out "$tmp/dp" > "$tmp/dp.log" 2>&1 || { cat "$tmp/dp.log"; fail "data-parallel run"; }
losses "$tmp/one" > "$tmp/one.loss"; losses "$tmp/dp" > "$tmp/dp.loss"
[ "$(wc -l < "$tmp/dp.loss")" -eq 8 ] || fail "8 steps logged once (rank 0 only)"
close "$tmp/one.loss" "$tmp/dp.loss" || fail "losses of 2 ranks vs --accum 2"
val "$tmp/one" > "$tmp/one.val"; val "$tmp/dp" > "$tmp/dp.val"
close "$tmp/one.val" "$tmp/dp.val" || fail "final weights (validation loss) of 2 ranks vs --accum 2"
[ "$(jq .options.accum "$tmp/dp/latest/state.json")" -eq 2 ] || fail "the saved accumulation is the step's"

# shellcheck disable=SC2086
$mpirun2 "$bin" train $common --steps 8 --accum 1 --out "$tmp/dp2" >/dev/null 2>&1 || fail "repeated run"
cmp "$tmp/dp/latest/model.safetensors" "$tmp/dp2/latest/model.safetensors" || fail "repeated runs differ"

# Resume: 2 ranks' run continued by 1 process, against the 1-process run continued the same way.
"$bin" train --resume "$tmp/dp" --out "$tmp/dp" --steps 12 --threads 1 >/dev/null 2>&1 || fail "resume 2 -> 1 rank"
"$bin" train --resume "$tmp/one" --out "$tmp/one" --steps 12 --threads 1 >/dev/null 2>&1 || fail "resume 1 process"
losses "$tmp/one" > "$tmp/one.loss"; losses "$tmp/dp" > "$tmp/dp.loss"
[ "$(wc -l < "$tmp/dp.loss")" -eq 12 ] || fail "12 steps after the resume"
close "$tmp/one.loss" "$tmp/dp.loss" || fail "losses after resuming with another rank count"
if timeout 300 mpirun --oversubscribe -np 3 "$bin" train --resume "$tmp/dp" --out "$tmp/dp" --steps 16 \
    --threads 1 > "$tmp/three.log" 2>&1; then fail "3 ranks cannot share 2 micro-batches"; fi
grep -q "error: .*cannot share" "$tmp/three.log" || { cat "$tmp/three.log"; fail "message for 3 ranks"; }

# A killed rank ends the job; the last checkpoint loads.
# shellcheck disable=SC2086
$mpirun2 "$bin" train $common --steps 100000 --accum 1 --checkpoint-every 1 --keep 2 --out "$tmp/kill" > "$tmp/kill.log" 2>&1 &
job=$!
for _ in $(seq 600); do [ -e "$tmp/kill/latest" ] && break; sleep 0.1; done
[ -e "$tmp/kill/latest" ] || fail "no checkpoint from the job to be killed"
sleep 1
victim=$(pgrep -f -- "--out $tmp/kill" | while read -r p; do [ "$(cat /proc/"$p"/comm)" = polysketch ] && echo "$p"; done | tail -1)
[ -n "$victim" ] || fail "no rank process found"
kill -9 "$victim"
if wait "$job"; then fail "the job survived a killed rank"; fi
"$bin" eval --checkpoint "$tmp/kill" --data "$tmp/data" --batches 1 --threads 1 >/dev/null || fail "the last checkpoint does not load"
echo "data parallelism: all checks passed"
