"""One process at a time in a run folder: a second one fails naming the holder; a killed one leaves no lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskdistill.errors import RunFolderError
from taskdistill.pipelines.run_folder import RunFolder, forget_stage, read_run_state
from tests.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_second_opener_in_the_same_process_fails_until_the_first_closes(tmp_path):
    first = RunFolder(tmp_path / "run", "seed: 0\n")
    state = json.loads((tmp_path / "run" / "run.json").read_text())
    assert state["status"] == "running" and state["pid"] == os.getpid() and state["host"] == socket.gethostname()
    for mode in ("resume", "force"):
        with pytest.raises(RunFolderError, match=rf"is in use by pid {os.getpid()} on .*--resume"):
            RunFolder(tmp_path / "run", "seed: 0\n", mode)
    with pytest.raises(RunFolderError, match="in use by pid"):
        forget_stage(tmp_path / "run", "teacher")
    assert (tmp_path / "run" / "config.yaml").is_file()  # the refused --force deleted nothing
    first.finish_stage("teacher", {"x": 1})
    first.set_status("complete")
    first.close_logger()  # the end of the run releases the lock
    forget_stage(tmp_path / "run", "teacher")
    again = RunFolder(tmp_path / "run", "seed: 0\n", "resume")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["previous_status"] == "complete"
    again.close_logger()
    forced = RunFolder(tmp_path / "run", "seed: 0\n", "force")  # replaces the contents, keeps the lock file
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", "checkpoints", "config.yaml", "run.json"]
    forced.close_logger()


def test_a_folder_holding_only_a_lock_file_is_new(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text("")  # a process died right after taking the lock
    RunFolder(tmp_path / "run", "seed: 0\n").close_logger()


def test_readers_see_a_running_run_whose_process_is_gone_as_interrupted(tmp_path):
    (tmp_path / "run").mkdir()
    run_json = tmp_path / "run" / "run.json"
    host = socket.gethostname()
    for pid, where, expected in ((dead_pid(), host, "interrupted"), (os.getpid(), host, "running"),
                                 (dead_pid(), "some-other-host", "running")):  # another host cannot be checked
        run_json.write_text(json.dumps({"status": "running", "stages": {}, "pid": pid, "host": where}))
        assert read_run_state(tmp_path / "run")["status"] == expected
    run_json.write_text(json.dumps({"status": "complete", "stages": {}, "pid": dead_pid(), "host": host}))
    assert read_run_state(tmp_path / "run")["status"] == "complete"
    assert read_run_state(tmp_path / "nothing") == {}
    run_json.write_text(json.dumps({"status": "running", "stages": {}, "pid": dead_pid(), "host": host}))
    with pytest.raises(RunFolderError, match=r"already exists \(status: interrupted\).*--resume"):
        RunFolder(tmp_path / "run", "seed: 0\n")


def test_resuming_a_folder_with_an_unreadable_run_json_is_a_clear_error(tmp_path):
    RunFolder(tmp_path / "run", "seed: 0\n").close_logger()
    (tmp_path / "run" / "run.json").write_text('{"status": "runn')
    with pytest.raises(RunFolderError, match=r"run\.json is unreadable .*--force"):
        RunFolder(tmp_path / "run", "seed: 0\n", "resume")
    RunFolder(tmp_path / "run", "seed: 0\n", "force").close_logger()  # the failed resume released the lock


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "taskdistill.cli.main", *args]


def _wait_for_running(run_json: Path, pid: int, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    """Poll until `run.json` says `pid` is running in the folder (or fail if the process ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the first run ended (rc {proc.returncode}) before it was seen running"
        try:
            state = json.loads(run_json.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("status") == "running" and state.get("pid") == pid:
            return state
        time.sleep(0.01)
    raise AssertionError(f"{run_json} never said pid {pid} was running")


def test_two_real_processes_then_a_killed_holder(shapes_dataset, tmp_path):
    train, test = shapes_dataset
    # Several teacher epochs: the first run is still training when it is caught; num_threads keeps it polite.
    sets = [a for o in tiny_overrides(train, test, tmp_path / "runs") + ["num_threads=1", "teacher.train.epochs=6"]
            for a in ("--set", o)]
    run = tmp_path / "runs" / "tiny"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    first = subprocess.Popen(_cli(["run", *sets]), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        state = _wait_for_running(run / "run.json", first.pid, first)
        os.kill(first.pid, signal.SIGSTOP)  # frozen while it holds the lock: it cannot finish under our feet
        assert state["host"] == socket.gethostname()
        second = subprocess.run(_cli(["run", "--resume", *sets]), cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"is in use by pid {first.pid} on {socket.gethostname()}" in second.stderr
        assert "Traceback" not in second.stderr
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stderr.close()
    raw = json.loads((run / "run.json").read_text())
    assert raw["status"] == "running" and raw["pid"] == first.pid  # what the killed process left
    assert read_run_state(run)["status"] == "interrupted"  # what a reader sees before the resume
    resumed = subprocess.run(_cli(["run", "--resume", *sets]), cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((run / "run.json").read_text())
    assert final["status"] == "complete" and final["previous_status"] == "interrupted"
    assert final["pid"] != first.pid
