#!/usr/bin/env bash
# Installs every Debian package polysketch needs to build, test and run (Debian 12).
# --experiments: also the corpora of experiments/ (Treasury of David for the long-context study).
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config
  libopenblas-openmp-dev   # GEMM (OpenMP flavour: nests cleanly inside our parallel regions)
  libdnnl-dev              # oneDNN: GEMM at the full vector width (AVX-512), bf16 matmul
  libgtest-dev             # tests
  libcli11-dev nlohmann-json3-dev libfmt-dev
  libsentencepiece-dev     # tokenizer
  zlib1g-dev               # CRC-32 checksums of checkpoint tensors
  bible-kjv                # the default corpus (King James Bible)
  python3-dev pybind11-dev # the Python module (import polysketch), for /usr/bin/python3
  python3-numpy python3-torch python3-pytest
  openmpi-bin libopenmpi-dev  # data-parallel training (mpirun -np N polysketch train)
  libcpp-httplib-dev       # polysketch serve (HTTP)
  chromium chromium-driver python3-selenium  # the browser test of serve's web page
  jq procps                # the test, bench and experiment scripts read JSON (jq) and find ranks (pgrep)
  gnuplot-nox              # tools/plot_*.sh (training curves, benchmark plots)
)
if [ "${1:-}" = "--experiments" ]; then
  packages+=(sword-comm-tdavid libsword-utils  # experiments/long_context.sh (mod2imp dumps the text)
             sentencepiece)                 # bench/prepare_throughput.sh (spm_encode, the baseline)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# ChromeDriver reaches Chromium's DevTools at "localhost" (the browser test): a bare root made by
# debootstrap has no /etc/hosts, so the name does not resolve there; add the standard line.
if ! getent hosts localhost > /dev/null; then
  echo "127.0.0.1 localhost" | $SUDO tee -a /etc/hosts > /dev/null
fi
