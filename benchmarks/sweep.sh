#!/usr/bin/env bash
# The issue-3 comparison table: every method x budgets 1,5,10,50 x seeds 0,1,2 on Fashion-MNIST.
# Runs two single-thread workers, one per core (two 2-thread processes on 2 cores stall each other),
# each on its own budgets, into one resumable sweep folder; then writes the report over the whole grid.
# Usage: benchmarks/sweep.sh [OUT]   (rerun to continue: finished cells are never recomputed)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/sweep}"
methods="teacher-linear,teacher-finetune,scratch,pretrained-finetune,task-agnostic,task-oriented,task-oriented-pretrained"
sweep() { .venv/bin/taskdistill sweep fashion-mnist-sweep --set num_threads=1 --methods "$methods" --seeds 0,1,2 --out "$out" "$@"; }
start=$(date +%s)
mkdir -p "$out"
taskset -c 0 bash -c "$(declare -f sweep); out=$out methods=$methods; sweep --budgets 10,5" > "$out/worker0.log" 2>&1 &
taskset -c 1 bash -c "$(declare -f sweep); out=$out methods=$methods; sweep --budgets 1,50" > "$out/worker1.log" 2>&1 &
wait
sweep --budgets 1,5,10,50 > "$out/report.log" 2>&1
echo "sweep wall time: $(( $(date +%s) - start )) s" | tee -a "$out/report.log"
