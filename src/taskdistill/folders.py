"""Folder checks shared by every layer that writes: can this process create and write files here?"""

from __future__ import annotations

import os
from pathlib import Path


def unwritable_reason(path: Path) -> str | None:
    """None if `path` exists or can be created and a file can be written in it; else the OS's reason."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return str(e.strerror or e)
    return None
