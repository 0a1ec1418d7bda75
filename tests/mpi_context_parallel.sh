#!/usr/bin/env bash
# Context parallelism under mpirun (OpenMPI, oversubscribed on one machine):
#  1. every sketch mechanism, K = 2 ranks per sequence (and K = 3, 4 for two of them), computes
#     the steps of 1 process: losses within 1e-5 relative (the block states are summed in another
#     order) and final weights within 1e-5 (the validation loss of both checkpoints); dropout on;
#  2. data x context parallelism, 4 ranks = 2 groups x K 2 with --accum 1, equals 1 process with
#     --accum 2; repeated runs are bit-identical;
#  3. the bytes passed per step are the formula's: layers x 2 (forward, backward) x batch x heads
#     x r(r+1)/2 x (head_dim + 1) x 4;
#  4. a context-parallel run resumes in 1 process; bad layouts are refused with clear errors.
set -euo pipefail
bin=$1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export POLYSKETCH_GEMM=onednn  # pinned: the automatic choice is a timing (see mpi_data_parallel.sh)
mpirun_bin=$(command -v mpirun) || { echo "mpirun missing (openmpi-bin)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bible 'Gen1:1-Gen30:1' > "$tmp/text.txt"
"$bin" prepare --input "$tmp/text.txt" --out "$tmp/data" --vocab-size 400 >/dev/null
# context 96 = 12 blocks of 8: 2, 3 or 4 chunks of whole blocks
common="--data $tmp/data --layers 2 --width 32 --heads 2 --context 96 --r 8 --block 8 --batch 3
  --warmup 2 --eval-every 0 --eval-batches 2 --threads 1 --seed 3 --dropout 0.1"
mpirun() { timeout 300 "$mpirun_bin" --oversubscribe "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
losses() { jq -r 'select(.loss != null) | "\(.step) \(.loss)"' "$1/metrics.jsonl"; }
close() {  # two files of "step value" lines agree within a relative 1e-5
  paste "$1" "$2" | awk '{ d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 1e-5 * ($2 < 0 ? -$2 : $2)) { print "differs: " $0; bad = 1 } } END { exit bad }'
}
val() { "$bin" eval --checkpoint "$1" --data "$tmp/data" --batches 2 --threads 1 --json | jq -r '"0 \(.loss)"'; }
same_run() {  # same_run ONE CP: equal losses and final weights
  losses "$1" > "$1.loss"; losses "$2" > "$2.loss"
  [ "$(wc -l < "$2.loss")" -eq "$(wc -l < "$1.loss")" ] || fail "$2: steps logged once (rank 0 only)"
  close "$1.loss" "$2.loss" || fail "$2: losses differ from $1"
  val "$1" > "$1.val"; val "$2" > "$2.val"
  close "$1.val" "$2.val" || fail "$2: final weights differ from $1"
}

for mech in polysketch polysketch-learned polysketch-local polysketch-learned-local; do
  # shellcheck disable=SC2086
  "$bin" train $common --mechanism $mech --steps 4 --out "$tmp/$mech-1" >/dev/null 2>&1 || fail "$mech: 1 process"
  ks="2"
  [ $mech = polysketch-learned-local ] && ks="2 3"
  [ $mech = polysketch ] && ks="2 4"
  for k in $ks; do
    # shellcheck disable=SC2086
    mpirun -np "$k" "$bin" train $common --mechanism $mech --steps 4 --context-parallel "$k" \
      --out "$tmp/$mech-cp$k" > "$tmp/out" 2> "$tmp/log" || { cat "$tmp/out" "$tmp/log"; fail "$mech: context parallel $k"; }
    same_run "$tmp/$mech-1" "$tmp/$mech-cp$k"
    # Only rank 0 reports: one summary on stdout, naming the checkpoint.
    [ "$(grep -c '^step 4: train loss .*validation loss' "$tmp/out")" = 1 ] || { cat "$tmp/out"; fail "$mech: one summary line expected"; }
    [ "$(grep -c '^checkpoint: ' "$tmp/out")" = 1 ] && grep -q "^checkpoint: $tmp/$mech-cp$k/step-00000004$" "$tmp/out" \
      || { cat "$tmp/out"; fail "$mech: one checkpoint line expected"; }
  done
done

# Bytes per step: 2 layers x 2 x batch 3 x 2 heads x 36 x 17 x 4.
bytes=$(jq -r 'select(.context_bytes != null) | .context_bytes' "$tmp/polysketch-cp2/metrics.jsonl" | sort -u)
[ "$bytes" = "$((2 * 2 * 3 * 2 * 36 * 17 * 4))" ] || fail "context bytes per step: $bytes"

# Data x context: 2 groups of 2 ranks.
m="--mechanism polysketch-learned-local"
# shellcheck disable=SC2086
"$bin" train $common $m --steps 4 --accum 2 --out "$tmp/acc2" >/dev/null 2>&1 || fail "1 process, --accum 2"
for run in dpcp dpcp2; do
  # shellcheck disable=SC2086
  mpirun -np 4 "$bin" train $common $m --steps 4 --context-parallel 2 --out "$tmp/$run" > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail "4 ranks, 2 x 2"; }
done
same_run "$tmp/acc2" "$tmp/dpcp"
cmp "$tmp/dpcp/latest/model.safetensors" "$tmp/dpcp2/latest/model.safetensors" || fail "repeated runs differ"

# A context-parallel run continued by 1 process, against the 1-process run continued the same way.
"$bin" train --resume "$tmp/dpcp" --out "$tmp/dpcp" --steps 6 --threads 1 >/dev/null 2>&1 || fail "resume in 1 process"
"$bin" train --resume "$tmp/acc2" --out "$tmp/acc2" --steps 6 --threads 1 >/dev/null 2>&1 || fail "resume 1 process"
same_run "$tmp/acc2" "$tmp/dpcp"

# Layouts that cannot work.
refused() {  # refused NEEDLE mpirun-args...
  local needle=$1; shift
  if mpirun "$@" > "$tmp/log" 2>&1; then fail "accepted: $*"; fi
  grep -q "error: .*$needle" "$tmp/log" || { cat "$tmp/log"; fail "message for: $*"; }
}
# shellcheck disable=SC2086
refused "needs a sketch mechanism" -np 2 "$bin" train $common --mechanism softmax --steps 1 --context-parallel 2 --out "$tmp/e1"
# shellcheck disable=SC2086
refused "must divide the number of ranks" -np 2 "$bin" train $common --steps 1 --context-parallel 4 --out "$tmp/e2"
# shellcheck disable=SC2086
refused "not a whole number of blocks of 8" -np 2 "$bin" train ${common/--context 96/--context 88} --steps 1 --context-parallel 2 --out "$tmp/e3"
echo "context parallelism: all checks passed"
