"""kill -9 at random points of a run, then `--resume`: does it always end with the uninterrupted run's metrics?

Run: .venv/bin/python benchmarks/fault_injection.py [--trials 20] [--seed 0] [--out benchmarks/results/fault_injection]

A small synthetic folder dataset (3 shape classes, 40 training and 15 test 32-px PNGs per class) and a run of
every stage (teacher linear probe + finetune, teacher-output cache with 2 views, distillation, finetune,
scratch baseline) with small models. One uninterrupted run gives the reference metrics. Each trial starts the
same run in a fresh output folder and a fresh image-store folder, sends SIGKILL after a random delay drawn
uniformly from the reference run's wall time, then runs `--resume` once; the trial passes when the resumed
run is complete and every stage's test top-1 and macro accuracy equal the reference exactly. Writes
`results.json` (every trial: delay, what the run had finished when killed, pass) and `summary.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_data(root: Path) -> None:
    """Three classes of `data_scale`'s synthetic shapes (circle, square, triangle) as 32-px PNGs."""
    from data_scale import draw_image  # this folder's module

    if (root / "done").is_file():
        return
    for split, n, offset in (("train", 40, 0), ("test", 15, 1_000_000)):
        for c, kind in enumerate(("circle", "square", "triangle")):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_image(offset + 3 * i + c, c, size=32).save(root / split / kind / f"{i:03d}.png")
    (root / "done").write_text("ok\n")


def overrides(data: Path, out: Path) -> list[str]:
    sets = [
        "data.dataset=folder", f"data.root={data / 'train'}", f"data.test_root={data / 'test'}",
        "data.labels_per_class=5", f"output_dir={out}", "name=faults", "eval_batch_size=32",
        "teacher.model.name=resnet10t", "teacher.model.pretrained=false", "teacher.model.input_size=24",
        "teacher.probe.epochs=3", "teacher.probe.min_steps=0", "teacher.train.epochs=4", "teacher.train.batch_size=8",
        "student.model.name=resnet10t", "student.model.input_size=16", "distill.transfer.views=2",
        "distill.train.epochs=3", "distill.train.batch_size=16", "student.finetune.epochs=2",
        "student.finetune.min_steps=0", "student.finetune.batch_size=8", "student.scratch.epochs=3",
        "student.scratch.min_steps=0", "student.scratch.batch_size=8", "num_threads=1",
    ]
    return [a for s in sets for a in ("--set", s)]


def launch(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "taskdistill.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def accuracies(run: Path) -> dict[str, tuple[float, float]]:
    stages = json.loads((run / "metrics.json").read_text())["stages"]
    return {s: (v["test"]["top1"], v["test"]["macro_accuracy"]) for s, v in stages.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/fault_injection")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    make_data(data)
    env = {**os.environ, "TASKDISTILL_CACHE_DIR": str(work / "cache-ref")}
    start = time.perf_counter()
    ref_proc = launch(["run", *overrides(data, work / "ref")], env)
    _, err = ref_proc.communicate()
    if ref_proc.returncode != 0:
        raise SystemExit(f"reference run failed:\n{err[-3000:]}")
    wall = time.perf_counter() - start
    reference = accuracies(work / "ref" / "faults")
    rng = np.random.default_rng(args.seed)
    trials = []
    for t in range(args.trials):
        run_out, cache = work / f"trial{t}", work / f"cache{t}"
        env = {**os.environ, "TASKDISTILL_CACHE_DIR": str(cache)}
        delay = float(rng.uniform(0.0, wall))
        proc = launch(["run", *overrides(data, run_out)], env)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        state_file = run_out / "faults" / "run.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        finished = sorted(state.get("stages", {}))
        resumed = launch(["run", "--resume", *overrides(data, run_out)], env)
        _, err = resumed.communicate()
        ok = resumed.returncode == 0
        got = accuracies(run_out / "faults") if ok else {}
        complete = ok and json.loads(state_file.read_text()).get("status") == "complete"
        passed = complete and got == reference
        trials.append({"trial": t, "kill_after_s": round(delay, 2), "killed": killed,
                       "stages_finished_when_killed": finished, "status_when_killed": state.get("status"),
                       "resume_exit": resumed.returncode, "passed": passed,
                       **({} if ok else {"resume_error": err[-500:]})})
        print(f"trial {t}: kill after {delay:.1f} s ({'killed' if killed else 'already done'}, finished "
              f"{finished or 'nothing'}) -> {'same metrics' if passed else 'DIFFERENT'}", flush=True)
        shutil.rmtree(run_out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    passed = sum(t["passed"] for t in trials)
    result = {"reference_wall_s": round(wall, 1), "reference": reference, "trials": trials, "passed": passed,
              "killed": sum(t["killed"] for t in trials)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = (f"# Fault injection\n\n{passed} of {len(trials)} trials ended with the uninterrupted run's metrics "
               f"({result['killed']} were killed mid-run; reference run {wall:.1f} s).\n")
    (out / "summary.md").write_text(summary)
    print(summary)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
