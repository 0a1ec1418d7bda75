#!/usr/bin/env bash
# Every command's bad flags, one table: each row must exit with status 1, print one line
# starting with `error:` that names the flag, and do no work (nothing written under --out).
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bible 'Gen1:1-Gen40:1' > "$tmp/text.txt"
$bin prepare --input "$tmp/text.txt" --out "$tmp/data" --vocab-size 400 >/dev/null
$bin train --data "$tmp/data" --out "$tmp/run" --layers 1 --width 32 --heads 2 --context 16 \
  --r 8 --block 8 --batch 1 --steps 2 --eval-batches 1 >/dev/null 2>&1
$bin prepare --task mqar --length 32 --items 4 --examples 20 --val-examples 4 --out "$tmp/task" >/dev/null
D="--data $tmp/data"
TR="train $D --out $tmp/new"
C="--checkpoint $tmp/run"
# needle | command line (word-split)
cases=$(cat <<ROWS
--steps|$TR --steps 0
--steps|$TR --steps -3
--warmup|$TR --warmup -1
--clip|$TR --clip -1
--clip|$TR --clip nan
--weight-decay|$TR --weight-decay -0.1
--keep|$TR --keep -1
--eval-every|$TR --eval-every -5
--eval-batches|$TR --eval-batches 0
--checkpoint-every|$TR --checkpoint-every -1
--time-budget|$TR --time-budget -1
--time-budget|$TR --time-budget inf
--lr|$TR --lr nan
--lr|$TR --lr inf
--lr|$TR --lr 0
--lr|$TR --lr -1
--min-lr-ratio|$TR --min-lr-ratio nan
--min-lr-ratio|$TR --min-lr-ratio 2
--batch|$TR --batch 0
--accum|$TR --accum 0
--context-parallel|$TR --context-parallel 0
--context-parallel 2 must divide|$TR --context-parallel 2
--threads|$TR --threads -1
--layers|$TR --layers 0
--layers|$TR --layers 1000000
--layers|$TR --layers 2.5
--width|$TR --width 1048576
--heads|$TR --heads 3 --width 32
--dropout|$TR --dropout 1
--mechanism|$TR --mechanism flash
--precision|$TR --precision fp8
--precision|train --resume $tmp/run --out $tmp/run --precision bf16
--p|$TR --p 3
--r|$TR --r 0
--block|$TR --block 0
hidden_mult|$TR --hidden-mult 0
hidden_mult|$TR --hidden-mult 257
--hidden-mult|train $D --out $tmp/new --init $tmp/run --hidden-mult 2
--layers|train --resume $tmp/run --out $tmp/run --layers 2
--lr|train --resume $tmp/run --out $tmp/run --lr 0.1
--mechanism|train $D --out $tmp/new --config $tmp/run/latest/config.json --mechanism softmax
--out|train $D
--layers|train $D --out $tmp/new --init $tmp/run --layers 2
--init|train --resume $tmp/run --out $tmp/run --init $tmp/run
--bogus|train $D --out $tmp/new --bogus 1
--context|eval $C $D --context 0
--batch|eval $C $D --batch 0
--batches|eval $C $D --batches -1
--threads|eval $C $D --threads -1
--precision|eval $C $D --precision bf15
--max-tokens|generate $C --max-tokens -1
--temperature|generate $C --temperature nan
--temperature|generate $C --temperature -1
--top-p|generate $C --top-p 0
--top-p|generate $C --top-p nan
--top-p|generate $C --top-p 1.5
--top-k|generate $C --top-k -1
--threads|generate $C --threads -1
--precision|generate $C --precision x
none.bin|generate $C --load-state $tmp/none.bin
--checkpoint|generate --max-tokens 3
--vocab-size|prepare --out $tmp/new --input $tmp/text.txt --vocab-size 100
--vocab-size|prepare --out $tmp/new --input $tmp/text.txt --vocab-size 0
--input|prepare --out $tmp/new --input
--task|prepare --out $tmp/new --task copy
--task|prepare --out $tmp/new --task mqar --input $tmp/text.txt
--items|prepare --out $tmp/new --task mqar --items 500
--items|prepare --out $tmp/new --task induction-heads --items 3
--length|prepare --out $tmp/new --task mqar --length 2
--length|prepare --out $tmp/new --length 64
--examples|prepare --out $tmp/new --task mqar --examples 0
--val-examples|prepare --out $tmp/new --task mqar --val-examples -1
--examples|prepare --out $tmp/new --task mqar --examples 100000000000
--vocab-size|prepare --out $tmp/new --task mqar --vocab-size 2
--context|train --data $tmp/task --out $tmp/new --context 16
vocab|eval $C --data $tmp/task
--n|bench-attention --n 0
--n|bench-attention --n 1073741824 --heads 65536
--repeat|bench-attention --repeat 0
--precision|bench-attention --precision f16
--precision|bench-decode --precision half
--context|bench-decode --context 0
--batch|bench-decode --batch 0
--concurrent|bench-decode --concurrent 99
--decode|bench-decode --decode 0
--threads|bench-attention --threads -1
--pass|bench-attention --pass backward
--mechanism|bench-attention --mechanism flash
--heads|bench-attention --heads 0
--n|bench-train --n 0
--n|bench-gemm --n 0
--r|bench-gemm --r 0
--heads|bench-gemm --heads 7
--repeat|bench-gemm --repeat 0
--repeat|bench-train --repeat 0
--warmup|bench-train --warmup -1
--threads|bench-train --threads -1
--layers|bench-train --layers 100000
ROWS
)
failed=0 count=0
while IFS='|' read -r needle cmd; do
  count=$((count + 1))
  rm -rf "$tmp/new"
  # shellcheck disable=SC2086
  if timeout 60 $bin $cmd >"$tmp/out" 2>"$tmp/err"; then status=0; else status=$?; fi
  if [ $status -ne 1 ] || ! head -1 "$tmp/err" | grep -q "^error: .*$needle" || [ -e "$tmp/new/step-00000001" ]; then
    echo "FAIL (exit $status): polysketch $cmd"; cat "$tmp/err"; failed=$((failed + 1))
  fi
done <<< "$cases"
echo "$((count - failed)) passed, $failed failed"
[ $failed -eq 0 ]
