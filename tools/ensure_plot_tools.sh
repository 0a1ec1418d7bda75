#!/usr/bin/env bash
# Sourced by the plot scripts: jq and gnuplot come from scripts/install-deps.sh (packages jq,
# gnuplot-nox); a clear error if they are missing, instead of failing halfway through a plot.
for tool in jq gnuplot; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (run scripts/install-deps.sh)" >&2; exit 1; }
done
