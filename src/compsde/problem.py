"""One validated description of a run, shared by the simulator, the SDE integrator and the CLI.

A :class:`Problem` ties a method, a test function (landscape) and a noise law to the step
size η (``lr``), the number of agents N, the per-agent batch B and the start point x0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import landscapes, methods, noise
from ._checks import check_choice, check_int, check_positive, check_vector
from .landscapes import Landscape
from .methods import Method
from .noise import NoiseLaw

DTYPES = {"float32": torch.float32, "float64": torch.float64}
LR_SCHEDULES = ("constant", "inv-sqrt")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtype itself) → torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
        return dtype
    return DTYPES[check_choice("dtype", dtype, DTYPES)]


def _build(value: Any, kind: type, maker: Callable[[str], Any]) -> Any:
    return value if isinstance(value, kind) else maker(value)


@dataclass
class Problem:
    """Method + landscape + noise + hyperparameters, validated on construction.

    ``x0`` is a number (every coordinate), a length-d sequence, or a tensor of shape (d,) or
    (runs, d). ``lr_schedule`` is ``"constant"`` (η_k = η) or ``"inv-sqrt"`` (η_k = η/√(k+1),
    THEORY.md §8). ``batch_noise`` is how the simulator draws a batch of B (``"scale"``: one
    draw at σ/√B; ``"mean"``: the mean of B draws at σ; :data:`compsde.noise.BATCH_NOISE`).
    """

    method: Method | str
    landscape: Landscape | str
    noise: NoiseLaw | str
    lr: float
    agents: int = 1
    batch: int = 1
    x0: float | Sequence[float] | Tensor = 1.0
    lr_schedule: str = "constant"
    batch_noise: str = "scale"
    _x0_tensor: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.method = _build(self.method, Method, methods.make)
        self.landscape = _build(self.landscape, Landscape, landscapes.make)
        self.noise = _build(self.noise, NoiseLaw, noise.make)
        self.lr = check_positive("lr", self.lr, text=False)
        self.agents = check_int("agents", self.agents, minimum=1, text=False)
        self.batch = check_int("batch", self.batch, minimum=1, text=False)
        self.lr_schedule = check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        self.batch_noise = noise.check_batch_noise(self.batch_noise)
        d = self.landscape.dim
        self.method.omegas(self.agents, d)  # checks per-agent lists and k <= d
        self.method.check_agents(self.agents)  # e.g. a majority vote needs N >= 2
        self.noise.scales(self.agents, d, self.batch)  # checks per-agent/per-coordinate sizes
        x0 = check_vector("x0", self.x0)
        if x0.ndim == 0:
            x0 = x0.expand(d).clone()
        if x0.shape[-1] != d or x0.ndim > 2:
            raise ValueError(f"x0 must be a number, a length-{d} vector or a (runs, {d}) "
                             f"tensor to match the landscape's dimension, got shape "
                             f"{tuple(x0.shape)}")
        if not torch.isfinite(x0).all():
            raise ValueError("x0 must be finite, got non-finite entries")
        self._x0_tensor = x0

    @property
    def dim(self) -> int:
        return self.landscape.dim

    def check_runs(self, runs: int) -> None:
        """Raise ValueError unless a (runs, d) x0 has ``runs`` rows."""
        x0 = self._x0_tensor
        if x0.ndim == 2 and x0.shape[0] != runs:
            raise ValueError(f"x0 has {x0.shape[0]} rows but runs is {runs}")

    def start(self, runs: int, dtype: torch.dtype, device: torch.device | str,
              rows: slice | None = None) -> Tensor:
        """x0 broadcast to (runs, d); ``rows`` picks those rows of a (R, d) x0 (a chunk)."""
        x0 = self._x0_tensor
        if x0.ndim == 2 and rows is not None:
            x0 = x0[rows]
        if x0.ndim == 2 and x0.shape[0] != runs:
            raise ValueError(f"x0 has {x0.shape[0]} rows but runs is {runs}")
        return x0.to(dtype=dtype, device=device).expand(runs, self.dim).clone()

    def step_size(self, k: int) -> float:
        """η_k for iteration k (0-based)."""
        return self.lr if self.lr_schedule == "constant" else self.lr / (k + 1) ** 0.5

    def loss(self, x: Tensor) -> Tensor:
        """f(x) − f* where f* is known, else f(x)."""
        value = self.landscape.value(x)
        minimum = self.landscape.minimum
        return value if minimum is None else value - minimum

    def describe(self) -> dict[str, Any]:
        x0 = self._x0_tensor
        return {
            "method": self.method.spec,
            "landscape": self.landscape.spec,
            "noise": self.noise.spec,
            "lr": self.lr,
            "lr_schedule": self.lr_schedule,
            "agents": self.agents,
            "batch": self.batch,
            "batch_noise": self.batch_noise,
            "d": self.dim,
            "x0": x0.tolist() if x0.ndim == 2 or not bool((x0 == x0[0]).all()) else float(x0[0]),
            "loss": "f(x) - f*" if self.landscape.minimum is not None else "f(x)",
            "f_star": self.landscape.minimum,
        }
