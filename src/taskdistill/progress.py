"""A progress line for long work that also reaches logs: rate and ETA, printed even when stderr is not a TTY.

On a terminal the line is redrawn in place (about twice a second); otherwise a full line is written every
`every` seconds (default 10), so a job under nohup, CI or a scheduler still shows that it is alive. Each
line also goes to the `taskdistill` logger at INFO.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("taskdistill")


def format_seconds(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLine:
    """`desc: done/total unit (pct) rate unit/s, ETA m:ss`; call `update(n)` as work completes, `close()` at the end."""

    def __init__(self, total: int, desc: str, unit: str = "img", stream: TextIO | None = None,
                 every: float | None = None, enabled: bool = True) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if every is not None else (0.5 if self.tty else 10.0)
        self.enabled = enabled
        self.done = 0
        self.lines = 0  # progress lines written so far
        self.start = self._last = time.monotonic()

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = format_seconds((self.total - self.done) / rate) if rate > 0 else "?"
        return (f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%), "
                f"{rate:,.0f} {self.unit}/s, ETA {eta}")

    def _emit(self, line: str, final: bool = False) -> None:
        if not self.enabled:
            return
        self.lines += 1
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        log.info(line)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._emit(self._line(now))

    def close(self) -> float:
        """Print the final line (count, seconds, rate); returns the elapsed seconds."""
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        self._emit(f"{self.desc}: {self.done:,} {self.unit} in {format_seconds(elapsed)} ({rate:,.0f} {self.unit}/s)",
                   final=True)
        return elapsed
