"""The package's import graph: no circle, no upward import (the layers in pyproject.toml's importlinter
contract, checked by import-linter), and the task kind is read by name only in `kinds/`."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "taskdistill"


def test_imports_only_point_down_the_layers():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    out = subprocess.run([exe, "--config", str(SRC.parents[1] / "pyproject.toml")], capture_output=True, text=True,
                         cwd=SRC.parents[1])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout


def test_the_task_kind_is_tested_by_name_only_in_kinds():
    pattern = re.compile(r"""(\.task\s*[!=]=|["']segmentation["']\s*(==|!=|in\b)|(==|!=)\s*["'](segmentation|classification)["'])""")
    hits = [f"{p.relative_to(SRC)}:{i}: {line.strip()}" for p in SRC.rglob("*.py") if "kinds" not in p.parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)
