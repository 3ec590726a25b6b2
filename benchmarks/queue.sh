#!/usr/bin/env bash
# Run benchmark commands one after another on one core, single-threaded: benchmarks/queue.sh CORE CMD...
# Each CMD is one shell string; a failed command is logged and the queue goes on (every benchmark here
# resumes from its finished cells, so rerunning the queue continues where it stopped).
set -uo pipefail
cd "$(dirname "$0")/.."
core="$1"; shift
for cmd in "$@"; do
  echo "[queue core $core] $(date -u +%H:%M:%S) start: $cmd"
  taskset -c "$core" bash -c "$cmd" || echo "[queue core $core] FAILED ($?): $cmd"
  echo "[queue core $core] $(date -u +%H:%M:%S) done: $cmd"
done
