#!/usr/bin/env bash
# Makes `import polysketch` work for Debian's /usr/bin/python3 everywhere: a .pth file in its
# site-packages naming build/<preset>/python (built by scripts/build.sh). Without it:
#   export PYTHONPATH=$PWD/build/release/python
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
dir="$PWD/build/$preset/python"
[ -f "$dir/polysketch/__init__.py" ] || { echo "error: $dir has no polysketch package (run scripts/build.sh $preset)" >&2; exit 1; }
site=$(/usr/bin/python3 -c 'import site; print(site.getsitepackages()[0])')
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO mkdir -p "$site"
echo "$dir" | $SUDO tee "$site/polysketch.pth.tmp" >/dev/null
$SUDO mv "$site/polysketch.pth.tmp" "$site/polysketch.pth"
/usr/bin/python3 -c 'import polysketch; print("import polysketch: ok (" + polysketch.__file__ + ")")'
