#!/usr/bin/env bash
# Every benchmark behind docs/BENCHMARKS.md, then the plot. Takes about 35 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/attention_targets.sh
bash bench/attention_scaling.sh
bash bench/train_step.sh
bash tools/plot_attention.sh
