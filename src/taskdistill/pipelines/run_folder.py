"""A run folder: `runs/<name>/` with the merged config, a log, per-stage state, checkpoints and reports.

A folder is never overwritten silently: an existing one needs `resume` (finished stages are loaded, not
rerun) or `force` (it is replaced). Each file inside is written atomically; `run.json` says whether the
run is complete, so a crashed run is recognisable and resumable rather than half-written. Under torchrun
only rank 0 writes here (see `RunFolder`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from taskdistill.engine import distributed
from taskdistill.engine.atomic import write_json, write_text
from taskdistill.errors import RunFolderError

Mode = Literal["new", "resume", "force"]


class RunFolder:
    """Under a process group rank 0 creates and writes the folder; every rank holds the same state in memory
    (stage_done / stage_info agree everywhere) and the other ranks write nothing."""

    def __init__(self, path: str | Path, config_yaml: str, mode: Mode = "new") -> None:
        self.path = Path(path)
        self.writer = distributed.is_main()
        self._state: dict[str, Any] = distributed.on_main(lambda: self._create(config_yaml, mode))
        distributed.check_visible(self.path / "run.json", "run folder")

    def _create(self, config_yaml: str, mode: Mode) -> dict[str, Any]:
        """Check, reset or continue the folder and mark it running; returns its state (rank 0)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"'{self.path}' exists and is not a folder; choose another run name")
        exists = self.path.is_dir() and any(self.path.iterdir())
        if exists and mode == "new":
            raise RunFolderError(
                f"run folder '{self.path}' already exists. Pass --resume to continue it (finished stages are "
                f"kept), --force to replace it, or --set name=OTHER for a new run."
            )
        if exists and mode == "resume":
            stored = self.path / "config.yaml"
            if stored.is_file() and stored.read_text() != config_yaml:
                raise RunFolderError(
                    f"cannot resume '{self.path}': its config.yaml differs from this run's config. "
                    f"Resume with the same config and overrides, or use --force to start over."
                )
        if exists and mode == "force":
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        write_text(self.path / "config.yaml", config_yaml)
        self._state = self._read_state()
        self.set_status("running")
        return self._state

    # --- state of stages -------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        p = self.path / "run.json"
        return json.loads(p.read_text()) if p.is_file() else {"status": "new", "stages": {}}

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
        log = logging.getLogger(f"taskdistill.run.{self.path.resolve()}")
        for h in list(log.handlers):
            h.close()
            log.removeHandler(h)


def forget_stage(path: str | Path, stage: str) -> None:
    """Mark `stage` as not run in the folder at `path` (its checkpoint is overwritten when it reruns).
    Under a process group rank 0 edits the file and every rank returns after it."""
    distributed.on_main(lambda: _forget(Path(path) / "run.json", stage))


def _forget(p: Path, stage: str) -> None:
    if p.is_file():
        state = json.loads(p.read_text())
        state["stages"].pop(stage, None)
        write_json(p, state)
