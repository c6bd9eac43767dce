"""Bounds on run time, checked before any work starts.

A run's time is bounded below by ``steps × max(STEP_FLOOR, numbers / NUMBER_RATE)``: every step
launches several tensor operations (no step of any backend takes less than ``STEP_FLOOR``), and
no device updates more than ``NUMBER_RATE`` numbers a second. A run whose *lower bound* exceeds
``MAX_SECONDS`` (one day) is refused with that estimate, unless the caller allows long runs
(the CLI's ``--allow-long``): such a run would certainly not end in a day, on any machine.
A run whose lower bound exceeds ``PROBE_ABOVE`` is timed on its first steps (a fraction of a
second, :func:`measured_seconds`); that estimate is judged against the same bound and printed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

#: seconds one step takes at the fastest (measured: 50–90 µs on a CPU, more on a GPU)
STEP_FLOOR = 10e-6
#: numbers a device updates per second at the fastest (a large GPU's memory bandwidth)
NUMBER_RATE = 1e11
#: the longest run started without being asked for: one day
MAX_SECONDS = 86_400.0
ALLOW_FLAG = "--allow-long"
#: lower bounds above this many seconds are measured on the first steps before the run starts
PROBE_ABOVE = 60.0
PROBE_STEPS = 4
PROBE_SECONDS = 0.25


def least_seconds(steps: float, numbers_per_step: float = 1.0) -> float:
    """Lower bound on the seconds of ``steps`` steps that each update ``numbers_per_step``."""
    per_step = max(STEP_FLOOR, float(numbers_per_step) / NUMBER_RATE)
    total = float(steps) * per_step
    return total if math.isfinite(total) else math.inf


def format_duration(seconds: float) -> str:
    """``90`` → ``'1.5 min'``; ``3e7`` → ``'347 days'``; infinity → ``'forever'``."""
    if not math.isfinite(seconds):
        return "forever"
    for unit, size in (("year", 365.25 * 86_400), ("day", 86_400), ("h", 3_600),
                       ("min", 60)):
        if seconds >= size:
            count = f"{seconds / size:.3g}"
            plural = "s" if unit in ("year", "day") and count != "1" else ""
            return f"{count} {unit}{plural}"
    return f"{seconds:.3g} s"


FLOOR_BASIS = (f"at the fastest any machine runs: {STEP_FLOOR * 1e6:g} µs a step, "
               f"{NUMBER_RATE:.0e} numbers a second")


def check_duration(flag: str, value: Any, seconds: float, *, allow: bool = False,
                   bound: float = MAX_SECONDS, allow_flag: str = ALLOW_FLAG,
                   fix: str | None = None, basis: str = FLOOR_BASIS,
                   least: bool = True) -> None:
    """Refuse (ValueError starting with ``flag``) a run that takes (``least``: at least)
    ``seconds`` when that exceeds ``bound``, unless ``allow``; ``fix`` says what to change
    (default: lower ``flag``), ``basis`` where the estimate comes from."""
    if allow or seconds <= bound:
        return
    how = f", or pass {allow_flag} to run it anyway" if allow_flag else ""
    length = (f"{'at least' if least else 'about'} {format_duration(seconds)}"
              if math.isfinite(seconds) else "forever")
    raise ValueError(f"{flag} {value} would make the run take {length} ({basis}), above the "
                     f"bound of {format_duration(bound)}; {fix or f'lower {flag}'}{how}")


def measured_seconds(probe: Callable[[int], Any], steps: float, workers: int = 1,
                     probe_steps: int = PROBE_STEPS, enough: float = PROBE_SECONDS) -> float:
    """Seconds of a run of ``steps`` steps, timed on its first steps: ``probe(k)`` (the same run
    cut to k steps) at k and 2k, k doubling from ``probe_steps`` until the longer probe takes
    ``enough`` seconds; the difference of the two leaves out what a run costs once (building
    the problem, starting the chunks). The work is shared among ``workers``; the result is
    never below :func:`least_seconds`."""
    def timed(k: int) -> float:
        started = time.perf_counter()
        probe(k)
        return time.perf_counter() - started

    k = probe_steps
    short, long = timed(k), timed(2 * k)
    while long < enough and 4 * k <= steps:
        k *= 2
        short, long = long, timed(2 * k)
    per_step = max(long - short, 0.0) / k
    return max(float(steps) * per_step / max(1, workers), least_seconds(steps))
