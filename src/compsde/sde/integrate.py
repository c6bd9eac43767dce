"""Batched Euler–Maruyama over R paths (THEORY.md §3).

``X_{n+1} = X_n + b(X_n) h + G(X_n) ΔW_n`` with ``ΔW_n ~ N(0, h I)`` drawn from an explicit
``torch.Generator`` (weak order 1). :func:`euler_maruyama` is the plain solver on user drift and
diffusion functions; :func:`simulate_sde` integrates a method's SDE with the same arguments,
records and :class:`~compsde.recording.RunResult` as :func:`compsde.simulation.simulate`.
By default ``h = η`` (one SDE step per iteration); ``dt < η`` takes ``⌈η/dt⌉`` sub-steps of
``η_k/⌈η/dt⌉`` per iteration, so every iteration's time ``t_k = Σ η_j`` is a grid point.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import SEED_MAX, check_device, check_float, check_int, check_positive
from ..chunks import (
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
from ..executors import Executor, LocalExecutor
from ..executors import resolve as resolve_executor
from ..landscapes import Landscape
from ..methods import Method
from ..noise import NoiseLaw
from ..problem import Problem, resolve_dtype
from ..recording import LossRecorder, RunResult, record_schedule
from ..simulation import check_working_set, kept_limit
from .diffusion import Covariance, DiagonalCov, FactorCov
from .models import SDEModel, sde_model

Diffusion = Covariance | Tensor
ModelBuilder = Callable[[Problem, torch.Generator], SDEModel]


def _as_factor(g: Diffusion, x: Tensor) -> Covariance:
    """A diffusion given as a factor: (runs, d) diagonal, (runs, d, m) matrix, or Covariance."""
    if isinstance(g, Covariance):
        return g
    if not isinstance(g, Tensor):
        raise ValueError(f"diffusion must return a Tensor or a Covariance, got {type(g).__name__}")
    if g.shape == x.shape:
        return DiagonalCov(g * g)
    if g.ndim == x.ndim + 1 and g.shape[:-1] == x.shape:
        return FactorCov(g)
    raise ValueError(f"diffusion must have shape {tuple(x.shape)} (diagonal) or "
                     f"{tuple(x.shape)} + (m,) (general), got {tuple(g.shape)}")


def euler_maruyama(drift: Callable[[float, Tensor], Tensor],
                   diffusion: Callable[[float, Tensor], Diffusion], x0: Tensor, *, dt: float,
                   steps: int, generator: torch.Generator | None = None,
                   increments: Callable[[int, tuple[int, ...]], Tensor] | None = None,
                   callback: Callable[[int, float, Tensor], None] | None = None) -> Tensor:
    """Integrate ``dX = f(t, X) dt + G(t, X) dW`` from ``x0`` (runs, d) for ``steps`` steps.

    ``diffusion`` returns the factor ``G``: shape (runs, d) for diagonal noise, (runs, d, m) for
    general noise, or a :class:`~compsde.sde.diffusion.Covariance` (``G Gᵀ = S``). ``ΔW`` is
    drawn from ``generator``, or taken from ``increments(n, shape)`` (e.g. to share a Brownian
    path with another solver). ``callback(n, t, x)`` sees the state after every step.
    Returns ``X`` at ``t = steps · dt`` (a new tensor; ``x0`` is not modified).
    """
    dt = check_positive("dt", dt)
    steps = check_int("steps", steps, minimum=0)
    if not isinstance(x0, Tensor) or x0.ndim != 2:
        raise ValueError(f"x0 must be a (runs, d) tensor, got "
                         f"{tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__}")
    x = x0.clone()
    root_dt = math.sqrt(dt)
    for n in range(steps):
        t = n * dt
        b = drift(t, x)
        if b.shape != x.shape:
            raise ValueError(f"drift must return shape {tuple(x.shape)}, got {tuple(b.shape)}")
        factor = _as_factor(diffusion(t, x), x)
        shape = (*x.shape[:-1], factor.noise_dim)
        if increments is None:
            dw = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
            dw.mul_(root_dt)
        else:
            dw = increments(n, shape)
            if dw.shape != shape:
                raise ValueError(f"increments must return shape {shape}, got "
                                 f"{tuple(dw.shape)}")
        x = x + b * dt + factor.apply(dw)
        if callback is not None:
            callback(n + 1, t + dt, x)
    return x


def record_paths(recorder: LossRecorder, index: int, x: Tensor, loss: Tensor,
                 x_sum: np.ndarray | None) -> None:
    """Record the runs' losses at record ``index``; a run that diverged is frozen at 0 (out of
    the statistics) and the live runs' ``x`` is added to ``x_sum`` (when kept)."""
    alive = recorder.record(index, slice(0, x.shape[0]), loss)
    if not bool(alive.all()):
        x[~alive] = 0.0
    if x_sum is not None:
        x_sum[index] += (x * alive.unsqueeze(-1)).sum(0).to("cpu", torch.float64).numpy()


class NormalStream:
    """Standard normals for the integrator, drawn in blocks from an explicit generator.

    On CPU the numbers come from a NumPy PCG64 generator seeded by one 63-bit draw from the
    torch ``generator`` (its ziggurat sampler is faster than torch's CPU ``randn``), several
    steps' worth per call; on other devices ``torch.randn`` runs on the device. Same generator
    state → same stream.
    """

    def __init__(self, generator: torch.Generator, dtype: torch.dtype, device: torch.device,
                 block_numbers: int = 1 << 20):
        self.dtype, self.device = dtype, device
        self.generator = generator
        self.block_numbers = block_numbers
        self.numpy = None
        if device.type == "cpu":
            seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
            self.numpy = np.random.Generator(np.random.PCG64(seed))
        self._block: Tensor | None = None
        self._buffer: np.ndarray | None = None
        self._next = 0

    def draw(self, shape: tuple[int, ...]) -> Tensor:
        """A fresh (writable) tensor of standard normals of ``shape``."""
        if self._block is None or self._next == self._block.shape[0] \
                or self._block.shape[1:] != shape:
            size = max(1, math.prod(shape))
            count = max(1, self.block_numbers // size)
            if self.numpy is not None:
                # refill one preallocated buffer: fresh 8 MB blocks would page-fault every time
                np_dtype = np.float32 if self.dtype == torch.float32 else np.float64
                if self._buffer is None or self._buffer.shape != (count, *shape):
                    self._buffer = np.empty((count, *shape), dtype=np_dtype)
                self.numpy.standard_normal(out=self._buffer, dtype=np_dtype)
                self._block = torch.from_numpy(self._buffer)
                if self._block.dtype != self.dtype:
                    self._block = self._block.to(self.dtype)
            else:
                self._block = torch.randn((count, *shape), generator=self.generator,
                                          dtype=self.dtype, device=self.device)
            self._next = 0
        out = self._block[self._next]
        self._next += 1
        return out


@dataclass(frozen=True)
class FullModel:
    """Builds the method's full SDE (:func:`~compsde.sde.models.sde_model`); picklable."""

    moments: str = "auto"
    samples: int = 32
    stability: bool = False

    def __call__(self, problem: Problem, generator: torch.Generator) -> SDEModel:
        return sde_model(problem, moments=self.moments, samples=self.samples,
                         generator=generator, stability=self.stability)


def default_builder(moments: str = "auto", samples: int = 32,
                    stability: bool = False) -> ModelBuilder:
    """A builder of the method's full SDE (:func:`~compsde.sde.models.sde_model`)."""
    return FullModel(moments, samples, stability)


def simulate_sde(
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
    dt: float | None = None,
    stability: bool = False,
    moments: str = "auto",
    samples: int = 32,
    model: ModelBuilder | None = None,
    record_mean_x: bool = False,
    executor: Executor | str | None = None,
) -> RunResult:
    """Integrate the SDE of a method over ``runs`` paths; same records as ``simulate``.

    Iteration ``k`` is the SDE time ``t_k = Σ_{j<k} η_j``; the loss ``f(X_{t_k}) − f*`` is
    recorded at the same steps as the simulator. ``dt`` (default ``lr``) is the Euler–Maruyama
    step, at most ``lr``. ``moments``/``samples``/``stability`` choose the model
    (:func:`~compsde.sde.models.sde_model`); ``model`` replaces it with any builder
    ``(problem, generator) -> SDEModel`` (e.g. the phase models). ``record_mean_x`` adds the
    mean state over live runs at each record as ``extra["x_mean"]`` (records, d). Paths are
    cut into chunks seeded from ``(seed, chunk)`` as in ``simulate``: the result is bitwise the
    same for every ``executor`` and ``memory_budget``; builders must be picklable for
    ``processes:N`` (module-level classes such as :class:`FullModel`). Signum integrates the
    pair SDE of (x, m) of :mod:`compsde.sde.momentum` (THEORY.md §8a; ``dt`` default lr/8,
    at most lr/4).
    """
    landscape = check_working_set(landscape, agents, dtype, memory_budget, 2)
    problem = Problem(method, landscape, noise, lr=lr, agents=agents, batch=batch, x0=x0,
                      lr_schedule=lr_schedule)
    steps = check_int("steps", steps, minimum=1, text=False)
    runs = check_int("runs", runs, minimum=1, text=False)
    seed = check_int("seed", seed, minimum=0, maximum=SEED_MAX, text=False)
    record_every = check_int("record_every", record_every, minimum=1, text=False)
    threshold = check_float("diverge_threshold", diverge_threshold, low=0, low_open=True,
                            text=False)
    memory_budget = check_int("memory_budget", memory_budget, minimum=1, text=False)
    samples = check_int("samples", samples, minimum=2, text=False)
    momentum = problem.method.name == "signum"   # the pair SDE of (x, m): sde/momentum.py
    if dt is None:
        dt = problem.lr / (8 if momentum else 1)
    dt = check_positive("dt", dt, text=False)
    if dt > problem.lr * (1 + 1e-12):
        raise ValueError(f"dt must be in (0, lr] = (0, {problem.lr:g}], got {dt:g}: the SDE "
                         f"takes ceil(lr/dt) Euler–Maruyama steps per iteration")
    substeps = max(1, math.ceil(problem.lr / dt - 1e-9))
    dtype = resolve_dtype(dtype)
    device = check_device(device)

    chosen = resolve_executor(executor)
    problem.check_runs(runs)
    if momentum:
        from . import momentum as pair

        pair.check_momentum(problem, substeps, stability=stability, moments=moments,
                            model=model)
    builder = model if model is not None else default_builder(moments, samples, stability)
    d, n = problem.dim, problem.agents
    itemsize = torch.empty((), dtype=dtype).element_size()
    marks = record_schedule(steps, record_every, runs=runs, limit=kept_limit())
    job: ChunkJob
    if momentum:
        chunks = chunk_layout(runs, (n + 1) * d)
        # per path: x, the momenta, their pull and the normals (~4 N d + 4 d)
        check_memory(chunks, (4 * n + 4) * d * itemsize, memory_budget,
                     f"the pair SDE of {problem.method.spec} on {problem.landscape.spec} with "
                     f"{n} agent(s) in {str(dtype).removeprefix('torch.')}")
        described = pair.describe(problem)
        job = pair.MomentumJob(problem, steps, substeps, marks, threshold, seed, dtype, device,
                               record_mean_x, progress,
                               keep_device=isinstance(chosen, LocalExecutor))
    else:
        # one model on the driver: validates the pair and describes the model before any work
        sde = builder(problem, chunk_generator(seed, 0, device, stream=1))
        described = sde.describe()
        per_point = getattr(sde.moments, "samples_per_evaluation", 1)
        chunks = chunk_layout(runs, (n * per_point + 1) * d)
        # per path: state, drift, covariance and normals (~8 d) plus the Monte-Carlo moments'
        # noise draws, messages and centred factor (~4 per draw) where the model samples them
        check_memory(chunks, (8 + 4 * n * per_point) * d * itemsize, memory_budget,
                     f"the SDE of {problem.method.spec} on {problem.landscape.spec} with {n} "
                     f"agent(s) in {str(dtype).removeprefix('torch.')}")
        job = SDEJob(problem, builder, steps, substeps, marks, threshold, seed, dtype, device,
                     record_mean_x, progress, keep_device=isinstance(chosen, LocalExecutor))
    started = _time.perf_counter()
    results = run_chunks(job, chunks, chosen, progress=progress,
                         desc=f"sde {problem.method.spec}")
    losses, final_x = assemble(results, len(marks), runs)
    lr_sum = np.cumsum([0.0] + [problem.step_size(k) for k in range(steps)])
    config = problem.describe() | {
        "steps": steps, "runs": runs, "seed": seed, "dtype": str(dtype).removeprefix("torch."),
        "record_every": record_every, "diverge_threshold": threshold,
        "memory_budget": memory_budget, "device": str(device), "samples": samples,
        "executor": chosen.spec,
        "kind": "sde",
        "dt": problem.lr / substeps, "substeps": substeps, **described,
    }
    extra: dict = {"seconds": _time.perf_counter() - started}
    if record_mean_x:
        x_sum = np.sum([r.x_sum for r in results], axis=0)
        alive = np.isfinite(losses).sum(axis=1)
        extra["x_mean"] = x_sum / np.maximum(alive, 1)[:, None]
    return RunResult(steps=marks, time=lr_sum[marks], losses=losses, config=config,
                     final_x=final_x, extra=extra)


@dataclass(frozen=True)
class SDEJob(ChunkJob):
    """Integrates a list of chunks (picklable: one task of an executor). Chunk ``c`` draws its
    Brownian increments from ``(seed, c, 0)`` and builds its model (Monte-Carlo moments) with
    a generator from ``(seed, c, 1)``."""

    label = "sde"

    problem: Problem
    builder: ModelBuilder
    steps: int
    substeps: int
    marks: np.ndarray
    threshold: float
    seed: int
    dtype: torch.dtype
    device: torch.device
    record_mean_x: bool = False
    progress: bool = False
    keep_device: bool = True

    def _chunk(self, chunk: Chunk, bar: Any) -> ChunkResult:
        problem, steps, marks, substeps = self.problem, self.steps, self.marks, self.substeps
        sde = self.builder(problem, chunk_generator(self.seed, chunk.index, self.device, 1))
        normals = NormalStream(chunk_generator(self.seed, chunk.index, self.device, 0),
                               self.dtype, self.device)
        recorder = LossRecorder(marks, chunk.size, self.threshold)
        x_sum = np.zeros((len(marks), problem.dim)) if self.record_mean_x else None
        x = problem.start(chunk.size, self.dtype, self.device, rows=chunk.rows)
        next_mark = 0
        checked = False
        for k in range(steps + 1):
            if k == marks[next_mark]:
                record_paths(recorder, next_mark, x, problem.loss(x), x_sum)
                next_mark += 1
            if k == steps:
                break
            lr_k = problem.step_size(k)
            h = lr_k / substeps
            noise_std = math.sqrt(h * sde.noise_scale(lr_k))
            for _ in range(substeps):
                drift, cov = sde.evaluate(x, lr_k)
                if not checked:
                    if drift.shape != x.shape:
                        raise ValueError(f"the model's drift has shape {tuple(drift.shape)}, "
                                         f"expected {tuple(x.shape)}")
                    checked = True
                z = normals.draw((chunk.size, cov.noise_dim))
                cov.add_noise_(x.add_(drift, alpha=h), z, noise_std)
            bar.update(1)
        return ChunkResult(chunk, recorder.losses, x if self.keep_device else x.cpu(), x_sum)
