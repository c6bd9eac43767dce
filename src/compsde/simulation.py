"""Batched Monte-Carlo simulation of DSGD, DCSGD and DSignSGD (THEORY.md §2).

The runs of one chunk × N agents advance together: each step draws the noise of every agent of
every run in one tensor of shape (runs, N, d), applies the method's messages and averages over
agents. Chunks are seeded from (seed, chunk) and can run on any executor with the same result
(:mod:`compsde.chunks`, :mod:`compsde.executors`).
"""

from __future__ import annotations

import os
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import SEED_MAX, check_device, check_float, check_int
from .chunks import (
    DEFAULT_MEMORY_BUDGET,
    Chunk,
    ChunkJob,
    ChunkResult,
    assemble,
    check_memory,
    chunk_generator,
    chunk_layout,
    run_chunks,
)
from .executors import Executor, LocalExecutor
from .executors import resolve as resolve_executor
from .landscapes import Landscape
from .methods import Method
from .noise import NoiseLaw
from .problem import Problem, resolve_dtype
from .recording import LossRecorder, RunResult, record_schedule

__all__ = ["DEFAULT_MEMORY_BUDGET", "SimulationJob", "simulate"]


def format_bytes(count: float) -> str:
    """``1536`` → ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} PiB"


def chunk_sizes(runs: int, per_run_bytes: int, memory_budget: int) -> list[int]:
    """Split ``runs`` into chunks whose working set fits ``memory_budget`` bytes.

    Refuses (``ValueError``) when one run alone needs more than the budget: no chunking can
    make it fit, and starting it would end in an allocation error.
    """
    if per_run_bytes > memory_budget:
        raise ValueError(f"memory_budget of {format_bytes(memory_budget)} is too small: one "
                         f"run needs {format_bytes(per_run_bytes)} of working memory per step "
                         f"(it grows with agents × d); lower agents or the landscape's d, or "
                         f"raise memory_budget")
    per_chunk = max(1, memory_budget // max(per_run_bytes, 1))
    full, rest = divmod(runs, per_chunk)
    return [per_chunk] * full + ([rest] if rest else [])


def kept_limit() -> int:
    """Bytes the kept results (per-run losses, final iterates) may take: half the machine's
    physical memory (they stay in memory for the whole run, beside the working set)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return 1 << 34


def check_kept_bytes(count: int, what: str, limit: int) -> None:
    """Refuse results that would not fit ``limit`` bytes (before allocating them)."""
    if count > limit:
        raise ValueError(f"runs are too many for this machine: {what} need "
                         f"{format_bytes(count)}, more than half its memory "
                         f"({format_bytes(limit)}); lower runs or d")


def check_working_set(landscape: Landscape | str, agents: int, dtype: str | torch.dtype,
                      memory_budget: int, vectors_per_agent: int = 4) -> Landscape:
    """Build ``landscape`` and refuse, before anything of size agents × d is allocated, a run
    whose per-step working set (``vectors_per_agent`` × agents × d numbers) exceeds
    ``memory_budget``; returns the landscape."""
    from . import landscapes

    built = landscape if isinstance(landscape, Landscape) else landscapes.make(landscape)
    agents = check_int("agents", agents, minimum=1, text=False)
    memory_budget = check_int("memory_budget", memory_budget, minimum=1, text=False)
    itemsize = torch.empty((), dtype=resolve_dtype(dtype)).element_size()
    chunk_sizes(1, vectors_per_agent * agents * built.dim * itemsize, memory_budget)
    return built


def simulate(
    method: Method | str,
    landscape: Landscape | str,
    noise: NoiseLaw | str,
    *,
    lr: float,
    steps: int,
    agents: int = 1,
    batch: int = 1,
    runs: int = 1,
    seed: int = 0,
    x0: float | Sequence[float] | Tensor = 1.0,
    dtype: str | torch.dtype = "float64",
    device: str | torch.device = "cpu",
    record_every: int = 1,
    diverge_threshold: float = 1e10,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    lr_schedule: str = "constant",
    progress: bool = False,
    executor: Executor | str | None = None,
    batch_noise: str = "scale",
) -> RunResult:
    """Run the discrete algorithm ``runs`` times and record the loss f(x_k) − f*.

    x_{k+1} = x_k − η_k · mean_i m_i with m_i the method's message of g_i = ∇f(x_k) + Z_i,
    Z_i drawn from ``noise`` with the batch convention σ → σ/√B (THEORY.md §2), or, with
    ``batch_noise="mean"``, as the mean of B per-sample draws at σ (§1a). Runs are cut
    into chunks seeded from ``(seed, chunk)`` (:mod:`compsde.chunks`): one ``seed`` reproduces
    every run bitwise, whatever ``executor`` (``local``, ``processes:N``, ``ray[:ADDRESS]``) and
    ``memory_budget`` (bytes of per-step working set per worker; a ValueError says when one
    chunk needs more). Runs whose loss becomes non-finite or exceeds ``diverge_threshold`` are
    counted as diverged, not raised. On remote executors ``final_x`` comes back on the CPU.
    """
    landscape = check_working_set(landscape, agents, dtype, memory_budget)
    problem = Problem(method, landscape, noise, lr=lr, agents=agents, batch=batch, x0=x0,
                      lr_schedule=lr_schedule, batch_noise=batch_noise)
    steps = check_int("steps", steps, minimum=1, text=False)
    runs = check_int("runs", runs, minimum=1, text=False)
    seed = check_int("seed", seed, minimum=0, maximum=SEED_MAX, text=False)
    record_every = check_int("record_every", record_every, minimum=1, text=False)
    threshold = check_float("diverge_threshold", diverge_threshold, low=0, low_open=True,
                            text=False)
    memory_budget = check_int("memory_budget", memory_budget, minimum=1, text=False)
    dtype = resolve_dtype(dtype)
    device = check_device(device)
    problem.check_runs(runs)
    chosen = resolve_executor(executor)

    d, n = problem.dim, problem.agents
    itemsize = torch.empty((), dtype=dtype).element_size()
    chunks = chunk_layout(runs, n * d)
    # a stateful method (Signum) keeps one more (runs, agents, d) buffer across steps
    vectors = 4 + int(problem.method.stateful)
    check_memory(chunks, vectors * n * d * itemsize, memory_budget,
                 f"{problem.landscape.spec} with {n} agent(s) in "
                 f"{str(dtype).removeprefix('torch.')}")
    check_kept_bytes(runs * d * itemsize, "the final iterates (runs × d)", kept_limit())
    marks = record_schedule(steps, record_every, runs=runs, limit=kept_limit())
    job = SimulationJob(problem, steps, marks, threshold, seed, dtype, device, progress,
                        keep_device=isinstance(chosen, LocalExecutor))
    started = _time.perf_counter()
    results = run_chunks(job, chunks, chosen, progress=progress,
                         desc=f"simulate {problem.method.spec}")
    losses, final_x = assemble(results, len(marks), runs)
    config = problem.describe() | {
        "steps": steps, "runs": runs, "seed": seed, "dtype": str(dtype).removeprefix("torch."),
        "record_every": record_every, "diverge_threshold": threshold,
        "memory_budget": memory_budget, "device": str(device), "executor": chosen.spec,
        "kind": "simulation",
    }
    times = np.array([sum(problem.step_size(k) for k in range(s)) for s in marks]) \
        if problem.lr_schedule != "constant" else marks * problem.lr
    return RunResult(steps=marks, time=times, losses=losses, config=config, final_x=final_x,
                     extra={"seconds": _time.perf_counter() - started})


@dataclass(frozen=True)
class SimulationJob(ChunkJob):
    """Simulates a list of chunks (picklable: one task of an executor)."""

    label = "simulate"

    problem: Problem
    steps: int
    marks: np.ndarray
    threshold: float
    seed: int
    dtype: torch.dtype
    device: torch.device
    progress: bool = False
    keep_device: bool = True

    def _chunk(self, chunk: Chunk, bar: Any) -> ChunkResult:
        problem, steps, marks = self.problem, self.steps, self.marks
        landscape, law, method = problem.landscape, problem.noise, problem.method
        generator = chunk_generator(self.seed, chunk.index, self.device)
        recorder = LossRecorder(marks, chunk.size, self.threshold)
        every = slice(0, chunk.size)
        x = problem.start(chunk.size, self.dtype, self.device, rows=chunk.rows)
        shape = (chunk.size, problem.agents, problem.dim)
        state = method.initial_state(shape, self.dtype, self.device) if method.stateful else None
        next_mark = 0
        for k in range(steps + 1):
            if k == marks[next_mark]:
                alive = recorder.record(next_mark, every, problem.loss(x))
                if not bool(alive.all()):
                    x[~alive] = 0.0  # frozen: a diverged run is out of the statistics
                next_mark += 1
            if k == steps:
                break
            grads = law.sample(shape, generator, problem.batch, dtype=self.dtype,
                               device=self.device, batch_noise=problem.batch_noise)
            grads.add_(landscape.grad(x).unsqueeze(-2))
            direction = (method.direction(grads, generator) if state is None
                         else method.step(grads, state, generator))
            x.sub_(direction, alpha=problem.step_size(k))
            bar.update(1)
        return ChunkResult(chunk, recorder.losses, x if self.keep_device else x.cpu())
