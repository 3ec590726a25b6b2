"""Checks before the first stage: the folders a run writes exist (or can be made), are writable and have room."""

from __future__ import annotations

import shutil
from pathlib import Path

from taskdistill.data.image_store import human_bytes
from taskdistill.errors import DataError
from taskdistill.folders import unwritable_reason


def folder_problem(path: Path, key: str, need_bytes: int) -> str | None:
    """Why `path` (the config key `key`) cannot take `need_bytes` of output, or None."""
    reason = unwritable_reason(path)
    if reason is not None:
        return f"{key} '{path}' is not writable ({reason}): point {key} at a writable folder"
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        return (f"{key} '{path}' has {human_bytes(free)} free, the run needs about {human_bytes(need_bytes)} there: free "
                f"space or point {key} at a larger disk")
    return None


def check_output_folders(folders: dict[str, tuple[Path, int]]) -> None:
    """`{config key: (folder, bytes it needs)}`; every problem in one DataError, before any work is done."""
    problems = [p for key, (path, need) in folders.items() if (p := folder_problem(path, key, need))]
    if problems:
        raise DataError("cannot write the run's output:\n  " + "\n  ".join(problems))
