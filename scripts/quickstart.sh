#!/usr/bin/env bash
# Fresh machine -> installed, built, the King James Bible prepared, a small PolySketchFormer
# (polysketch-learned-local) trained for at most 5 minutes on all cores, validation perplexity
# printed next to the unigram baseline, and a sample generated. Also makes `import polysketch`
# work for /usr/bin/python3 (scripts/install-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh release
bash scripts/install-python.sh release   # import polysketch, for /usr/bin/python3
bin=./build/release/polysketch
$bin prepare --out data/kjv --vocab-size 2048
rm -rf runs/quickstart
$bin train --data data/kjv --out runs/quickstart --mechanism polysketch-learned-local \
  --layers 4 --width 256 --heads 4 --context 256 --r 32 --block 64 \
  --batch 8 --steps 300 --warmup 20 --lr 2e-3 --eval-every 100 --time-budget 5
$bin generate --checkpoint runs/quickstart --prompt "And God said" --max-tokens 80 --seed 1
