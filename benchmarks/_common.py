"""Shared helpers for the benchmark scripts: timing, machine description, JSON output."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

from compsde.io import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "date": date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "cores": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each case over ``repeats`` round-robin rounds (after one warm-up round),
    so that load changes hit every case alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for rep in range(repeats + 1):
        for name, fn in cases.items():
            started = time.perf_counter()
            fn()
            if rep:
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/NAME.json`` atomically, with the machine description."""
    return write_json(RESULTS / f"{name}.json", {"machine": machine(), **payload})


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True)))
