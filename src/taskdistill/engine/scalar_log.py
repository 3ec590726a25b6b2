"""The per-stage scalar log: one CSV row per logging point (every N steps) and per epoch, and optionally
TensorBoard event files with the same scalars.

Columns: `kind` (`step` or `epoch`), `step`, `epoch`, `lr`, `images`, `seconds`, `images_per_s`, then the
mean of each of the task's outputs (`loss`, and parts such as `kl`, `agree`) over the steps since the
previous row of the same kind. TensorBoard is imported only when asked for (the `tensorboard` extra).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from taskdistill.atomic import write_text
from taskdistill.errors import ConfigError

BASE_COLUMNS: tuple[str, ...] = ("kind", "step", "epoch", "lr", "images", "seconds", "images_per_s")


def _summary_writer(log_dir: Path) -> Any:
    """TensorBoard's SummaryWriter, imported here so that the package works without tensorboard installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError when the tensorboard package is missing
        raise ConfigError("log.tensorboard=true needs the tensorboard package: pip install 'taskdistill[tensorboard]' "
                          "(or set log.tensorboard=false; the CSV scalar log is written either way)") from None
    return SummaryWriter(log_dir=str(log_dir))


def _step_of(row: dict[str, str]) -> int | None:
    try:
        return int(row.get("step") or "")
    except ValueError:  # a row torn by a kill
        return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class ScalarLog:
    """Append rows to `path` (CSV; None: no file) and scalars to TensorBoard under `tensorboard_dir` (None: none).

    `resume_step`: a stage resumed from a mid-stage checkpoint at that step keeps the rows up to it and drops
    later ones (written after the checkpoint by the interrupted run); None starts the file afresh.
    """

    def __init__(self, path: Path | None, tensorboard_dir: Path | None = None, tag: str = "train",
                 resume_step: int | None = None) -> None:
        self.path, self.tag = path, tag
        self.columns: list[str] | None = None
        self._rows: list[dict[str, str]] = []
        if path is not None and resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or []) or None
                self._rows = [r for r in reader if _step_of(r) is not None and _step_of(r) <= resume_step]
        self._writer = _summary_writer(tensorboard_dir) if tensorboard_dir is not None else None
        if path is not None:
            self._flush()

    def _flush(self) -> None:
        """Rewrite the file (atomically) from the rows kept so far; later rows are appended."""
        if self.path is None:
            return
        buf = io.StringIO()
        if self.columns is not None:
            writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(self._rows)
        write_text(self.path, buf.getvalue())
        self._rows = []

    def write(self, row: dict[str, Any]) -> None:
        """One row: the base columns plus scalar means; the first row fixes the columns."""
        values = {k: _fmt(v) for k, v in row.items()}
        if self.path is not None:
            if self.columns is None:
                self.columns = list(BASE_COLUMNS) + [k for k in row if k not in BASE_COLUMNS]
                self._rows = [values]
                self._flush()
            else:
                with self.path.open("a", newline="") as f:  # appended and flushed: at most the last row is torn
                    csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n").writerow(values)
        if self._writer is not None:
            step = int(row["step"])
            for k, v in row.items():
                if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)):
                    self._writer.add_scalar(f"{self.tag}/{row['kind']}/{k}", float(v), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
