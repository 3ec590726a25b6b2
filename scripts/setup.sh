#!/usr/bin/env bash
# Install everything taskdistill needs on a fresh Debian machine: the Fashion-MNIST data package,
# a virtualenv in .venv, and the package with its pinned dependencies. Safe to run again.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh hub,test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "setup: installing Debian package dataset-fashion-mnist"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
echo "setup: pip install -e ${spec} (torch==2.14.1 and torchvision==0.29.1 are pinned)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "${spec}" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import taskdistill, torch, torchvision, timm; print('setup: ok, taskdistill', taskdistill.__version__, 'torch', torch.__version__)"
