#!/usr/bin/env bash
# Installs jq and gnuplot (Debian packages) if missing; sourced by the plot scripts.
for tool in jq gnuplot; do
  if ! command -v "$tool" >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get install -y -qq --no-install-recommends jq gnuplot-nox >/dev/null
    break
  fi
done
