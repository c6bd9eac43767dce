"""Gradient noise per parameter group: tail index ν̂ (with se), Hill index, DSignSGD phases.

For each group (e.g. a transformer's embeddings, attention, MLP and norms;
:func:`compsde.nn.groups.parameter_groups`) at most ``per_group`` of its coordinates are drawn
uniformly and their M mini-batch samples kept; the Student-t fit of :mod:`.tails` (shared ν
within the group, per-coordinate μ_j, σ_j, split-panel jackknife; THEORY.md §1, §6) gives ν̂
and se(ν̂); the phase of each kept coordinate follows from ``Y_j = |μ_j| / (√2 σ_j)``
(THEORY.md §3; Phase 1 ``Y > 3/2``, Phase 3 ``Y < 1``). Coordinates whose samples are mostly
one repeated value (e.g. embedding rows of words absent from every batch) are *sparse*: they
carry no fit and are counted apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int
from .tails import fit_student_t, hill

PHASE1_Y, PHASE3_Y = 1.5, 1.0


@dataclass(frozen=True)
class GroupNoise:
    """Noise summary of one parameter group (module docstring)."""

    name: str
    size: int
    kept: int
    sparse: int
    nu: float
    nu_se: float | None
    nu_interval: tuple[float, float]
    xi_se: float | None
    hill_alpha: float
    hill_se: float
    phases: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "kept_coordinates": self.kept,
                "sparse_coordinates": self.sparse, "nu": self.nu, "nu_se": self.nu_se,
                "nu_interval": list(self.nu_interval), "xi_se": self.xi_se,
                "hill": {"alpha": self.hill_alpha, "se": self.hill_se},
                "phases": self.phases}


def pick_group_coordinates(groups: Mapping[str, Tensor], per_group: int,
                           generator: torch.Generator | None) -> dict[str, Tensor]:
    """At most ``per_group`` indices of each group, drawn uniformly without replacement."""
    per_group = check_int("per_group", per_group, minimum=16)
    picked = {}
    for name, index in groups.items():
        if index.numel() > per_group:
            index = index[torch.randperm(index.numel(), generator=generator)[:per_group]]
        picked[name] = index.sort().values
    return picked


def fit_group(name: str, samples: Tensor, size: int,
              generator: torch.Generator | None = None) -> GroupNoise:
    """Fit one group's kept samples ``(M, kept)`` (module docstring)."""
    try:
        fit = fit_student_t(samples, generator=generator)
    except ValueError:                            # every kept coordinate is sparse
        nan = math.nan
        return GroupNoise(name, size, samples.shape[1], samples.shape[1], nan, None,
                          (nan, nan), None, nan, nan, {"phase1": nan, "phase2": nan,
                                                       "phase3": nan})
    live = ~fit.degenerate
    y = fit.loc[live].abs() / (math.sqrt(2.0) * fit.scale[live])
    n = max(y.numel(), 1)
    phases = {"phase1": float((y > PHASE1_Y).sum()) / n,
              "phase2": float(((y > PHASE3_Y) & (y <= PHASE1_Y)).sum()) / n,
              "phase3": float((y <= PHASE3_Y).sum()) / n}
    z = (samples.double()[:, live] - fit.loc[live]) / fit.scale[live]
    tail = hill(z)
    return GroupNoise(name, size, samples.shape[1], int(fit.degenerate.sum()), fit.nu,
                      fit.nu_se, fit.nu_interval, fit.xi_se, tail.alpha, tail.se, phases)


def fit_groups(samples: Mapping[str, Tensor], sizes: Mapping[str, int],
               generator: torch.Generator | None = None) -> dict[str, GroupNoise]:
    """:func:`fit_group` for every group of ``samples`` (``{group: (M, kept)}``)."""
    return {name: fit_group(name, x, int(sizes[name]), generator)
            for name, x in samples.items()}
