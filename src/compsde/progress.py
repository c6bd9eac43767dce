"""Progress reporting: a tqdm bar on a terminal, a plain line every few seconds elsewhere.

Long work run from a script, a pipe or a batch queue (stderr not a terminal) still says how far
it is: :class:`LineProgress` prints ``desc: 40% (400/1000 step), 12 s elapsed, ~18 s left``
at most every ``interval`` seconds, one line each, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

LINE_INTERVAL = 10.0  # seconds between two progress lines when stderr is not a terminal


class LineProgress:
    """The part of tqdm's interface the library uses (``update``, ``close``, context manager)."""

    def __init__(self, total: int | None = None, *, desc: str = "", unit: str = "it",
                 initial: int = 0, interval: float | None = None,
                 file: TextIO | None = None, clock: Any = time.monotonic) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self.interval = LINE_INTERVAL if interval is None else interval
        self.file = file
        self.clock = clock
        self.started = clock()
        self.last = self.started
        self.start_n = initial
        self.closed = False
        self.postfix = ""

    def _line(self) -> str:
        elapsed = self.clock() - self.started
        done = self.n - self.start_n
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            share = f"{self.n / self.total:.0%} ({self.n}/{self.total} {self.unit})"
            rate = done / elapsed if elapsed > 0 else 0.0
            left = f", ~{(self.total - self.n) / rate:.0f} s left" if rate > 0 else ""
        else:
            share, left = f"{self.n} {self.unit}", ""
        tail = f", {self.postfix}" if self.postfix else ""
        return f"{head}{share}, {elapsed:.0f} s elapsed{left}{tail}"

    def update(self, count: int = 1) -> None:
        self.n += count
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            print(self._line(), file=self.file or sys.stderr, flush=True)

    def set_postfix(self, **values: Any) -> None:
        """Shown at the end of the next line, as tqdm shows it beside the bar."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed and self.clock() - self.started >= self.interval:
            print(self._line(), file=self.file or sys.stderr, flush=True)
        self.closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Silent(LineProgress):
    def update(self, count: int = 1) -> None:
        self.n += count

    def close(self) -> None:
        self.closed = True


def progress_bar(total: int | None = None, *, enabled: bool, desc: str = "", unit: str = "it",
                 initial: int = 0, leave: bool = False) -> Any:
    """A tqdm bar when ``enabled`` and stderr is a terminal, :class:`LineProgress` when
    ``enabled`` otherwise, and a silent counter when not ``enabled``."""
    if not enabled:
        return _Silent(total, desc=desc, unit=unit, initial=initial)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave)
    return LineProgress(total, desc=desc, unit=unit, initial=initial)
