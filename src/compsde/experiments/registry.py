"""Registry of figure reproductions.

A figure module defines ``run(out, preset, seed, progress) -> FigureOutcome`` and decorates it
with :func:`figure`, naming the data sets it reads; ``compsde reproduce NAME`` finds it here and
checks that those data sets are installed before any work starts. Every run writes
``OUT/NAME.png`` and ``OUT/NAME.json`` (with a verdict per panel) atomically.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import versions, write_json
from ..nn.data import check_data
from .cache import code_fingerprint, recomputing

PRESETS = ("quick", "full")
# Modules imported by load_all(); each registers its figures on import.
FIGURE_MODULES = ("fig1", "fig2", "fig3", "fig4", "fig5", "lm", "ef")


@dataclass
class FigureOutcome:
    """What a figure run produced: per-panel verdicts, the PNG, and data for the JSON."""

    name: str
    claim: str
    panels: dict[str, dict[str, Any]]  # panel -> {"verdict": "pass"|"fail", ...details}
    png: Path
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        ok = all(p.get("verdict") == "pass" for p in self.panels.values())
        return "pass" if ok and self.panels else "fail"

    def to_dict(self) -> dict[str, Any]:
        return {"figure": self.name, "claim": self.claim, "verdict": self.verdict,
                "panels": self.panels, "png": str(self.png), "seconds": self.seconds,
                **self.data}


@dataclass
class Figure:
    name: str
    claim: str
    runner: Callable[..., FigureOutcome]
    data: tuple[str, ...] = ()       # data set specs it reads (compsde.nn.data.check_data)
    # wall time of the quick preset with one job on an idle 2-core machine (BENCHMARKS.md; lm:
    # twice its 341 s with two jobs), for the estimate printed before a long figure starts;
    # None: under a minute
    quick_seconds: float | None = None

    def expected_seconds(self, preset: str, jobs: int) -> float | None:
        """About how long the quick preset takes with ``jobs`` runs at once (None: unknown or
        the full preset): the one-job time shared by the jobs the machine's cores can run."""
        if preset != "quick" or self.quick_seconds is None:
            return None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        return self.quick_seconds / max(1, min(jobs, cores))

    def run(self, out: Path, preset: str = "quick", seed: int = 0, progress: bool = False,
            use_cache: bool = True, **options: Any) -> FigureOutcome:
        """Run the figure into ``out``; ``options`` go to the runner (e.g. ``jobs``).

        With ``use_cache=False`` every run is computed again (and the cache refreshed).
        """
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        check_data(self.data)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with contextlib.nullcontext() if use_cache else recomputing():
            outcome = self.runner(out=out, preset=preset, seed=seed, progress=progress,
                                  **options)
        outcome.seconds = time.perf_counter() - started
        write_json(out / f"{self.name}.json", outcome.to_dict() | {
            "preset": preset, "seed": seed, "code": code_fingerprint(), **options,
            "versions": versions()})
        return outcome


FIGURES: dict[str, Figure] = {}


def figure(name: str, claim: str, data: tuple[str, ...] = (), quick_seconds: float | None = None
           ) -> Callable[[Callable[..., FigureOutcome]], Callable[..., FigureOutcome]]:
    """Register ``run(out, preset, seed, progress)`` as the reproduction of figure ``name``,
    which reads the data sets ``data`` (specs as ``--data`` takes them); ``quick_seconds``:
    :attr:`Figure.quick_seconds`."""

    def register(runner: Callable[..., FigureOutcome]) -> Callable[..., FigureOutcome]:
        FIGURES[name] = Figure(name, claim, runner, tuple(data), quick_seconds)
        return runner

    return register


def load_all() -> dict[str, Figure]:
    """Import every figure module that exists and return the registry."""
    for module in FIGURE_MODULES:
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{module}":
                raise
    return FIGURES
