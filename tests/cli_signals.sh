#!/usr/bin/env bash
# Stop signals at random moments of training never corrupt the process: RUNS runs, each sent a
# burst of SIGTERM or SIGINT at a random time, must all end with status 0 and a loadable
# checkpoint. (Debian's oneDNN 2.6 points rsp at the heap inside its JIT sgemm, oneDNN issue
# #4845: a signal handler run there wrote its frame into the heap, ~1 run in 20 aborted with one
# signal; the burst makes each run far likelier to hit it. The signals are now received by a
# watcher thread, src/train/stop_signals.h, so no handler runs on a compute thread.)
set -euo pipefail
bin=$1
runs=${RUNS:-30}
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

bible 'Gen1:1-Gen20:18' > "$tmp/c.txt"
$bin prepare --input "$tmp/c.txt" --out "$tmp/d" --vocab-size 400 >/dev/null
T=(--data "$tmp/d" --layers 2 --width 64 --heads 2 --context 64 --r 8 --block 16 --batch 4 --eval-batches 1 --threads 1)
RANDOM=${SEED:-7}
for i in $(seq "$runs"); do
  sig=TERM; ((i % 2)) && sig=INT
  rm -rf "$tmp/r" "$tmp/log"  # the last run's log would say "step" before this run can be stopped
  $bin train "${T[@]}" --out "$tmp/r" --steps 1000000 >"$tmp/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "^step [1-9]" "$tmp/log" 2>/dev/null && break; sleep 0.05; done
  sleep "0.$((RANDOM % 5))$((RANDOM % 10))"
  for _ in $(seq 40); do kill -$sig $pid 2>/dev/null || break; done
  status=0; wait $pid || status=$?
  pid=""
  [ $status -eq 0 ] || { tail -3 "$tmp/log"; fail "run $i (SIG$sig): exit status $status"; }
  grep -q "interrupted; checkpoint: " "$tmp/log" || { tail -3 "$tmp/log"; fail "run $i: no checkpoint line"; }
  $bin eval --checkpoint "$tmp/r" --data "$tmp/d" --batch 1 --batches 1 >/dev/null 2>&1 || fail "run $i: checkpoint not loadable"
done
echo "ok: $runs runs, each stopped by a burst of signals, saved and loadable"
