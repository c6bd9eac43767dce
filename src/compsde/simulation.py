"""Batched Monte-Carlo simulation of DSGD, DCSGD and DSignSGD (THEORY.md §2).

The runs of one chunk × N agents advance together: each step draws the noise of every agent of
every run in one tensor of shape (runs, N, d), applies the method's messages and averages over
agents. Chunks are seeded from (seed, chunk) and can run on any executor with the same result
(:mod:`compsde.chunks`, :mod:`compsde.executors`).
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._checks import check_float, check_int
from .chunks import (
    DEFAULT_MEMORY_BUDGET,
    Chunk,
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
) -> RunResult:
    """Run the discrete algorithm ``runs`` times and record the loss f(x_k) − f*.

    x_{k+1} = x_k − η_k · mean_i m_i with m_i the method's message of g_i = ∇f(x_k) + Z_i,
    Z_i drawn from ``noise`` with the batch convention σ → σ/√B (THEORY.md §2). Runs are cut
    into chunks seeded from ``(seed, chunk)`` (:mod:`compsde.chunks`): one ``seed`` reproduces
    every run bitwise, whatever ``executor`` (``local``, ``processes:N``, ``ray[:ADDRESS]``) and
    ``memory_budget`` (bytes of per-step working set per worker; a ValueError says when one
    chunk needs more). Runs whose loss becomes non-finite or exceeds ``diverge_threshold`` are
    counted as diverged, not raised. On remote executors ``final_x`` comes back on the CPU.
    """
    problem = Problem(method, landscape, noise, lr=lr, agents=agents, batch=batch, x0=x0,
                      lr_schedule=lr_schedule)
    steps = check_int("steps", steps, minimum=1)
    runs = check_int("runs", runs, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    record_every = check_int("record_every", record_every, minimum=1)
    threshold = check_float("diverge_threshold", diverge_threshold, low=0, low_open=True)
    memory_budget = check_int("memory_budget", memory_budget, minimum=1)
    dtype = resolve_dtype(dtype)
    device = torch.device(device)
    problem.check_runs(runs)
    chosen = resolve_executor(executor)

    d, n = problem.dim, problem.agents
    itemsize = torch.empty((), dtype=dtype).element_size()
    chunks = chunk_layout(runs, n * d)
    check_memory(chunks, 4 * n * d * itemsize, memory_budget,
                 f"{problem.landscape.spec} with {n} agent(s) in "
                 f"{str(dtype).removeprefix('torch.')}")
    marks = record_schedule(steps, record_every)
    job = SimulationJob(problem, steps, marks, threshold, seed, dtype, device, progress,
                        keep_device=isinstance(chosen, LocalExecutor))
    started = _time.perf_counter()
    results = run_chunks(job, chunks, chosen, progress=progress,
                         desc=f"simulate {problem.method.spec}")
    losses, final_x = assemble(results, len(marks), runs)
    config = problem.describe() | {
        "steps": steps, "runs": runs, "seed": seed, "dtype": str(dtype).removeprefix("torch."),
        "record_every": record_every, "diverge_threshold": threshold, "kind": "simulation",
    }
    times = np.array([sum(problem.step_size(k) for k in range(s)) for s in marks]) \
        if problem.lr_schedule != "constant" else marks * problem.lr
    return RunResult(steps=marks, time=times, losses=losses, config=config, final_x=final_x,
                     extra={"seconds": _time.perf_counter() - started})


@dataclass(frozen=True)
class SimulationJob:
    """Simulates a list of chunks (picklable: one task of an executor)."""

    problem: Problem
    steps: int
    marks: np.ndarray
    threshold: float
    seed: int
    dtype: torch.dtype
    device: torch.device
    progress: bool = False
    keep_device: bool = True

    def __call__(self, chunks: list[Chunk]) -> list[ChunkResult]:
        bar = tqdm(total=self.steps * len(chunks), disable=not (self.progress and
                                                                  self.keep_device),
                   unit="step", desc=f"simulate {self.problem.method.spec}", leave=False)
        with bar:
            return [self._chunk(chunk, bar) for chunk in chunks]

    def _chunk(self, chunk: Chunk, bar: tqdm) -> ChunkResult:
        problem, steps, marks = self.problem, self.steps, self.marks
        landscape, law, method = problem.landscape, problem.noise, problem.method
        generator = chunk_generator(self.seed, chunk.index, self.device)
        recorder = LossRecorder(marks, chunk.size, self.threshold)
        every = slice(0, chunk.size)
        x = problem.start(chunk.size, self.dtype, self.device, rows=chunk.rows)
        shape = (chunk.size, problem.agents, problem.dim)
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
                               device=self.device)
            grads.add_(landscape.grad(x).unsqueeze(-2))
            x.sub_(method.direction(grads, generator), alpha=problem.step_size(k))
            bar.update(1)
        return ChunkResult(chunk, recorder.losses, x if self.keep_device else x.cpu())
