#!/usr/bin/env bash
# The run directory's promises through the binary (docs/DESIGN.md, "The run directory"): random
# SIGKILLs at checkpoint-heavy moments always leave a loadable checkpoint and a parseable
# metrics.jsonl; a new run never deletes an existing run's checkpoints; re-saving a step is
# atomic; SIGTERM/SIGHUP/double Ctrl-C save; one trainer per directory; damaged tensors are named.
set -euo pipefail
bin=$1
kills=${KILLS:-24}
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*"; exit 1; }
expect_fail() {  # expect_fail "needle" cmd...
  local needle=$1; shift
  if "$@" >"$tmp/out" 2>&1; then fail "expected an error from: $*"; fi
  grep -q -- "^error: .*$needle" "$tmp/out" || { cat "$tmp/out"; fail "'error: ...$needle' not printed"; }
}
loadable() {  # the checkpoint evaluates, and every metrics line is one whole JSON object
  $bin eval --checkpoint "$1" --data "$tmp/data" --batch 1 --batches 1 >/dev/null 2>"$tmp/eval.err" \
    || { cat "$tmp/eval.err"; fail "$1 is not loadable"; }
  if [ -f "$1/metrics.jsonl" ] && grep -qv '^{.*}$' "$1/metrics.jsonl"; then fail "$1/metrics.jsonl has a torn line"; fi
}
# wait_for_step LOG: until training has logged a step (a launch writes a fresh LOG: an earlier
# run's log would answer before this one can be stopped)
wait_for_step() {
  for _ in $(seq 100); do grep -q "^step [1-9]" "$1" 2>/dev/null && return 0; sleep 0.1; done
  cat "$1"; fail "training did not start"
}

bible 'Gen1:1-Gen20:1' > "$tmp/genesis.txt"
$bin prepare --input "$tmp/genesis.txt" --out "$tmp/data" --vocab-size 400 >/dev/null
T=(--data "$tmp/data" --layers 1 --width 32 --heads 2 --context 32 --r 8 --block 8 --batch 2 --eval-batches 1 --threads 1)

# 1. A new run into a directory with checkpoints is refused; the old run stays whole.
$bin train "${T[@]}" --out "$tmp/R" --steps 20 --checkpoint-every 10 >/dev/null 2>&1
expect_fail "already holds checkpoints" $bin train "${T[@]}" --out "$tmp/R" --steps 5
loadable "$tmp/R"
test -d "$tmp/R/step-00000020" || fail "step 20 was removed"

# 2. Re-saving existing steps: resuming a finished run, and resuming an older step of the same run.
$bin train --resume "$tmp/R" --out "$tmp/R" >/dev/null 2>&1
$bin train --resume "$tmp/R/step-00000010/" >/dev/null 2>&1  # --out: the run holding the step
expect_fail "--out is required" $bin train "${T[@]}" --steps 5
loadable "$tmp/R"
[ "$(readlink "$tmp/R/latest")" = step-00000020 ] || fail "latest is $(readlink "$tmp/R/latest")"
[ "$(grep -c '"loss"' "$tmp/R/metrics.jsonl")" = 20 ] || fail "metrics.jsonl should hold 20 step records"
cp -a "$tmp/R" "$tmp/RX"  # (R's step 20 is damaged below)
$bin train --resume "$tmp/RX" --steps 22 >/dev/null 2>&1  # a run directory alone, extended
[ "$(readlink "$tmp/RX/latest")" = step-00000022 ] || fail "resume without --out: latest is $(readlink "$tmp/RX/latest")"

# 3. SIGTERM, SIGHUP and a double Ctrl-C each end with a saved, loadable checkpoint.
for sig in TERM HUP INT-INT; do
  $bin train "${T[@]}" --out "$tmp/S-$sig" --steps 1000000 --eval-every 0 > "$tmp/S-$sig.log" 2>&1 &
  pid=$!; pids+=($pid)
  wait_for_step "$tmp/S-$sig.log"
  if [ $sig = INT-INT ]; then kill -INT $pid; sleep 0.05; kill -INT $pid 2>/dev/null || true; else kill -$sig $pid; fi
  wait $pid || true
  loadable "$tmp/S-$sig"
done

# 4. One trainer per directory.
$bin train "${T[@]}" --out "$tmp/L" --steps 1000000 > "$tmp/L.log" 2>&1 &
pid=$!; pids+=($pid)
wait_for_step "$tmp/L.log"
expect_fail "in use by another trainer" $bin train --resume "$tmp/L" --out "$tmp/L"
kill -9 $pid; wait $pid 2>/dev/null || true

# 5. Random SIGKILLs while saving a checkpoint every step.
$bin train "${T[@]}" --out "$tmp/K" --steps 1000000 --checkpoint-every 1 --keep 2 > /dev/null 2>&1 &
pid=$!; pids+=($pid)
for _ in $(seq 50); do [ -e "$tmp/K/latest" ] && break; sleep 0.1; done
for i in $(seq "$kills"); do
  sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
  kill -9 $pid; wait $pid 2>/dev/null || true
  loadable "$tmp/K"
  rm -f "$tmp/K.log"
  $bin train --resume "$tmp/K" --out "$tmp/K" --steps 1000000 > "$tmp/K.log" 2>&1 &
  pid=$!; pids+=($pid)
done
wait_for_step "$tmp/K.log"
kill -INT $pid; wait $pid || { cat "$tmp/K.log"; fail "the last resume failed"; }
loadable "$tmp/K"
if ls -a "$tmp/K" | grep -q tmp; then ls -a "$tmp/K"; fail "temporaries left behind"; fi
[ "$(ls -d "$tmp"/K/step-* | wc -l)" -le 2 ] || fail "--keep 2 not honoured"

# 6. A flipped byte in a tensor is detected and named; NaN weights are refused.
f="$tmp/R/step-00000020/model.safetensors"
size=$(stat -c %s "$f")
printf '\x7f' | dd of="$f" bs=1 seek=$((size - 3)) conv=notrunc status=none
expect_fail "tensor 'final_ln.bias' fails its checksum" $bin eval --checkpoint "$tmp/R" --data "$tmp/data"
echo "cli hardening: all checks passed ($kills kills)"
