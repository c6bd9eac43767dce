"""Monte-Carlo runs in seeded chunks, shared by the simulator and the SDE integrator.

R runs are cut into consecutive chunks of at most ``CHUNK_NUMBERS`` random draws per step
(at least one run each); chunk ``c`` draws all its randomness from generators seeded by
``(seed, c)`` alone. The layout depends only on the problem's shape (runs, agents, d and the
draws per run), never on the memory budget or the executor, so a result is bitwise the same
on every executor and for every way of grouping chunks into tasks. Peak memory is one chunk's
working set per worker, checked against ``memory_budget`` before any work starts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .executors import Executor, LocalExecutor
from .progress import progress_bar

CHUNK_NUMBERS = 1 << 20  # random draws per step in one chunk (8 MB of float64)
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of per-step working set allowed per worker


@dataclass(frozen=True)
class Chunk:
    """Runs ``first … first + size − 1``, the ``index``-th chunk."""

    index: int
    first: int
    size: int

    @property
    def rows(self) -> slice:
        return slice(self.first, self.first + self.size)


def chunk_layout(runs: int, draws_per_run: int) -> list[Chunk]:
    """Consecutive chunks of ``max(1, CHUNK_NUMBERS // draws_per_run)`` runs covering ``runs``."""
    per = max(1, CHUNK_NUMBERS // max(int(draws_per_run), 1))
    return [Chunk(i, first, min(per, runs - first))
            for i, first in enumerate(range(0, runs, per))]


def check_memory(chunks: Sequence[Chunk], per_run_bytes: int, memory_budget: int,
                 what: str) -> None:
    """Raise ValueError naming ``memory_budget`` when one chunk's working set exceeds it."""
    largest = max(c.size for c in chunks)
    need = largest * int(per_run_bytes)
    if need > memory_budget:
        raise ValueError(f"memory_budget must be at least {need} bytes ({_size(need)}) for "
                         f"{what}: one chunk of {largest} run(s) needs {_size(per_run_bytes)} "
                         f"per run per step; got {memory_budget} bytes")


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:.3g} PB"  # pragma: no cover


def human_bytes(count: float) -> str:
    """``8e12`` → ``'8 TB'`` (decimal units)."""
    return _size(float(count))


def chunk_generator(seed: int, chunk: int, device: torch.device | str = "cpu",
                    stream: int = 0) -> torch.Generator:
    """A torch generator seeded from ``(seed, chunk, stream)`` only (NumPy's SeedSequence mixes
    the three into a 63-bit seed); ``stream`` separates independent uses within a chunk."""
    words = np.random.SeedSequence([int(seed), int(chunk), int(stream)]).generate_state(2)
    value = ((int(words[0]) << 32) | int(words[1])) & ((1 << 63) - 1)
    return torch.Generator(device=torch.device(device)).manual_seed(value)


def task_groups(chunks: Sequence[Chunk], workers: int, per_worker: int = 4) -> list[list[Chunk]]:
    """Consecutive groups of chunks, about ``per_worker`` tasks per worker (fewer, larger tasks
    keep the per-task overhead of remote executors small; grouping never changes a result)."""
    count = max(1, min(len(chunks), workers * per_worker))
    bounds = np.linspace(0, len(chunks), count + 1).round().astype(int)
    return [list(chunks[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


@dataclass
class ChunkResult:
    """What one chunk hands back: its losses (records, size), final states, optional sums."""

    chunk: Chunk
    losses: np.ndarray
    final_x: Tensor
    x_sum: np.ndarray | None = None


class ChunkJob:
    """Base of the picklable jobs that run a list of chunks (one task of an executor): each
    chunk through ``_chunk``, under one step bar shown only where the job runs in the
    driver's process. Subclasses are frozen dataclasses with ``problem``, ``steps``,
    ``progress`` and ``keep_device`` fields and a ``label`` for the bar."""

    label = "run"

    def __call__(self, chunks: list[Chunk]) -> list[ChunkResult]:
        bar = progress_bar(self.steps * len(chunks), enabled=self.progress and self.keep_device,
                           unit="step", desc=f"{self.label} {self.problem.method.spec}")
        with bar:
            return [self._chunk(chunk, bar) for chunk in chunks]

    def _chunk(self, chunk: Chunk, bar: Any) -> ChunkResult:
        raise NotImplementedError


def run_chunks(job: Callable[[list[Chunk]], list[ChunkResult]], chunks: Sequence[Chunk],
               executor: Executor, *, progress: bool, desc: str) -> list[ChunkResult]:
    """Every chunk's result in chunk order, computed by ``job`` on ``executor``.

    The local executor runs all chunks in one call (``job`` shows its own step bar); the
    others get groups of chunks as tasks with one bar of tasks done on the driver.
    """
    if isinstance(executor, LocalExecutor):
        done = job(list(chunks))
    else:
        groups = task_groups(chunks, executor.workers)
        done = [r for part in executor.map(job, groups, progress=progress, desc=desc)
                for r in part]
    return sorted(done, key=lambda r: r.chunk.index)


def assemble(results: Sequence[ChunkResult], records: int, runs: int) -> tuple[np.ndarray, Tensor]:
    """The (records, runs) loss array and the (runs, d) final states from chunk results."""
    losses = np.full((records, runs), np.nan)
    for r in results:
        losses[:, r.chunk.rows] = r.losses
    return losses, torch.cat([r.final_x for r in results])
