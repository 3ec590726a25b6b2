#!/usr/bin/env bash
# Install the Debian packages the built-in `clipart` dataset is made from (docs/data.md):
#   openclipart-png (Open Clip Art Library PNGs, public domain), tuxpaint-stamps-default (Tux Paint stamps, GPL-2)
# The dataset itself is built from them on first use (into ~/.cache/taskdistill/datasets/clipart-v1, or
# $TASKDISTILL_CACHE_DIR/datasets/clipart-v1); pass --build to build it now with the .venv's taskdistill.
# Not part of scripts/setup.sh: the default setup and the tests do not need it. Safe to run again.
# Usage: scripts/setup_clipart_data.sh [--build]
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

debs=(openclipart-png tuxpaint-stamps-default)
missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup_clipart_data: apt-get install ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup_clipart_data: Debian packages already installed"
fi

if [ "${1:-}" = "--build" ]; then
  .venv/bin/python -c "from taskdistill.data.clipart import ensure_clipart; print('setup_clipart_data: built', ensure_clipart())"
fi
echo "setup_clipart_data: ok"
