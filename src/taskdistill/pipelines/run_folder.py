"""A run folder: `runs/<name>/` with the merged config, a log, per-stage state, checkpoints and reports.

A folder is never overwritten silently: an existing one needs `resume` (finished stages are loaded, not
rerun) or `force` (it is replaced). Each file inside is written atomically; `run.json` says whether the
run is complete, so a crashed run is recognisable and resumable rather than half-written. Under torchrun
only rank 0 writes here (see `RunFolder`).

One process at a time: the process that opens the folder holds an exclusive `flock` on `<folder>/.lock`
until the run ends (`close_logger`), and a second one (a mistaken second `--resume`) fails at once naming
the holder's pid and host. The OS drops the lock when its process dies, however it dies, so a killed run
never blocks the next one. While running, `run.json` records the pid and host; `read_run_state` reports
a "running" run whose process is gone as "interrupted"; a resumed folder records it as `previous_status`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from taskdistill import distributed
from taskdistill.atomic import write_json, write_text
from taskdistill.errors import RunFolderError

Mode = Literal["new", "resume", "force"]
LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    """Who holds the folder's lock, from what it wrote into the lock file (or run.json)."""
    for _ in range(20):  # the holder writes its pid just after taking the lock: give it a moment
        try:
            info = json.loads((path / LOCK_NAME).read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if info.get("pid"):
            return f"pid {info['pid']} on {info.get('host', '?')}"
        time.sleep(0.05)
    state = _read_json(path / "run.json")
    return f"pid {state['pid']} on {state.get('host', '?')}" if state.get("pid") else "another process"


def _lock(path: Path) -> IO[str]:
    """Take the folder's exclusive lock without waiting, write this process into it; RunFolderError if held."""
    f = open(path / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the whole run
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.close()
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunFolderError(f"cannot lock run folder '{path}' ({e}); put output_dir on a filesystem that "
                                 f"supports file locks") from None
        raise RunFolderError(
            f"run folder '{path}' is in use by {_holder(path)}: one process at a time may run in it. Wait for "
            f"that run to finish (or stop it), then --resume; or use --set name=OTHER for a separate run.") from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
    f.flush()
    return f


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the folder's lock for a short edit (a folder in use by a run is an error)."""
    f = _lock(path)
    try:
        yield
    finally:
        f.close()


def _read_json(p: Path) -> dict[str, Any]:
    """The JSON object in `p`, or {} when it is missing or unreadable."""
    try:
        data = json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(state: dict[str, Any]) -> bool:
    """True for a "running" state whose process, on this host, no longer exists (a killed or crashed run).
    A run on another host cannot be checked from here and stays "running"."""
    pid = state.get("pid")
    if state.get("status") != "running" or not isinstance(pid, int):
        return False
    return state.get("host") == socket.gethostname() and not _pid_alive(pid)


def read_run_state(path: str | Path) -> dict[str, Any]:
    """`run.json` of the folder at `path` as a reader should see it: status "interrupted" for a run whose
    process is gone ({} when there is none)."""
    state = _read_json(Path(path) / "run.json")
    if is_stale(state):
        state = {**state, "status": "interrupted"}
    return state


def _clear(path: Path) -> None:
    """Delete everything in the folder but its lock file (which this process holds)."""
    for child in path.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class RunFolder:
    """Under a process group rank 0 creates and writes the folder; every rank holds the same state in memory
    (stage_done / stage_info agree everywhere) and the other ranks write nothing."""

    def __init__(self, path: str | Path, config_yaml: str, mode: Mode = "new") -> None:
        self.path = Path(path)
        self.writer = distributed.is_main()
        self._lock: IO[str] | None = None  # rank 0: the open, flock'ed lock file, until `close_logger`
        self._state: dict[str, Any] = distributed.on_main(lambda: self._create(config_yaml, mode))
        distributed.check_visible(self.path / "run.json", "run folder")

    def _create(self, config_yaml: str, mode: Mode) -> dict[str, Any]:
        """Lock, check, reset or continue the folder and mark it running; returns its state (rank 0)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"'{self.path}' exists and is not a folder; choose another run name")
        if mode == "new":
            self._refuse_existing()  # before locking: an existing folder is an error whoever holds it
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.path)
        try:
            return self._open(config_yaml, mode)
        except BaseException:
            self.release()
            raise

    def _exists(self) -> bool:
        return self.path.is_dir() and any(p.name != LOCK_NAME for p in self.path.iterdir())

    def _refuse_existing(self) -> None:
        if not self._exists():
            return
        state = read_run_state(self.path)
        status = f" (status: {state['status']})" if state.get("status") else ""
        raise RunFolderError(
            f"run folder '{self.path}' already exists{status}. Pass --resume to continue it (finished stages are "
            f"kept), --force to replace it, or --set name=OTHER for a new run."
        )

    def _open(self, config_yaml: str, mode: Mode) -> dict[str, Any]:
        """With the lock held: the checks of `mode`, then the folder marked running by this process."""
        if mode == "new":
            self._refuse_existing()  # another process may have made it since the first check
        exists = self._exists()
        if exists and mode == "resume":
            stored = self.path / "config.yaml"
            if stored.is_file() and stored.read_text() != config_yaml:
                raise RunFolderError(
                    f"cannot resume '{self.path}': its config.yaml differs from this run's config. "
                    f"Resume with the same config and overrides, or use --force to start over."
                )
        if exists and mode == "force":
            _clear(self.path)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        write_text(self.path / "config.yaml", config_yaml)
        self._state = self._read_state()
        if exists and mode == "resume":
            # We hold the lock, so a run.json that still says "running" was left by a process that is gone.
            before = self._state.get("status")
            self._state["previous_status"] = "interrupted" if before == "running" else before
        self._state.update(pid=os.getpid(), host=socket.gethostname())
        self.set_status("running")
        return self._state

    def release(self) -> None:
        """Give up the folder's lock (the end of the run; also when the process exits)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- state of stages -------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        p = self.path / "run.json"
        if not p.is_file():
            return {"status": "new", "stages": {}}
        try:
            state = json.loads(p.read_text())
            if not isinstance(state.get("stages"), dict):
                raise ValueError("no 'stages' record")
        except (OSError, ValueError, AttributeError) as e:
            raise RunFolderError(f"cannot resume '{self.path}': its run.json is unreadable ({e}). Use --force to "
                                 f"start over, or --set name=OTHER for a new run.") from None
        return state

    def set_status(self, status: str, error: str | None = None) -> None:
        self._state["status"] = status
        if error is not None:
            self._state["error"] = error
        else:
            self._state.pop("error", None)
        if self.writer:
            write_json(self.path / "run.json", self._state)

    def stage_done(self, stage: str) -> bool:
        return stage in self._state["stages"]

    def stage_info(self, stage: str) -> dict[str, Any]:
        return self._state["stages"][stage]

    def finished_stages(self) -> list[str]:
        """The finished stages, in the order they finished."""
        return list(self._state["stages"])

    def finish_stage(self, stage: str, info: dict[str, Any]) -> None:
        self._state["stages"][stage] = info
        if self.writer:
            write_json(self.path / "run.json", self._state)

    def checkpoint(self, stage: str) -> Path:
        return self.path / "checkpoints" / stage

    # --- logging ---------------------------------------------------------------------------------
    def logger(self) -> logging.Logger:
        log = logging.getLogger(f"taskdistill.run.{self.path.resolve()}")
        log.setLevel(logging.INFO)
        log.propagate = False
        if not log.handlers and not self.writer:
            log.addHandler(logging.NullHandler())  # one log per run: rank 0's
        elif not log.handlers:
            fh = logging.FileHandler(self.path / "log.txt")
            fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            sh = logging.StreamHandler()
            sh.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(fh)
            log.addHandler(sh)
        return log

    def close_logger(self) -> None:
        """The end of the run: close its log and release the folder's lock for the next process."""
        log = logging.getLogger(f"taskdistill.run.{self.path.resolve()}")
        for h in list(log.handlers):
            h.close()
            log.removeHandler(h)
        self.release()


def forget_stage(path: str | Path, stage: str) -> None:
    """Mark `stage` as not run in the folder at `path` (its checkpoint is overwritten when it reruns).
    Under a process group rank 0 edits the file and every rank returns after it. A folder in use by a
    running process is a RunFolderError."""
    distributed.on_main(lambda: _forget(Path(path), stage))


def _forget(folder: Path, stage: str) -> None:
    p = folder / "run.json"
    if not p.is_file():
        return
    with _locked(folder):
        state = json.loads(p.read_text())
        state["stages"].pop(stage, None)
        write_json(p, state)
