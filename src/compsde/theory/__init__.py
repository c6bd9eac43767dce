"""Closed-form theory for DSGD, DCSGD and DSignSGD (THEORY.md §3–6).

Everything works on a :class:`QuadraticModel` (``f = ½ xᵀHx``, per-agent noise scales σ_i and
compressors ω_i) built directly or with :meth:`QuadraticModel.from_problem` from the same
arguments as :func:`compsde.simulate`:

- :func:`stationary_loss`, :func:`linear_speedup` — where the loss settles (exact discrete or SDE);
- :func:`loss_curve` — exact expected-loss curves (SDE and exact discrete recursion);
- :func:`pl_bound`, :func:`pl_bound_for`, :func:`dsignsgd_phase_bound` — upper bounds over time;
- :func:`stability_limit`, :func:`check_stable` — DCSGD's step-size limit.
"""

from ._laws import ell, sign_mean, unit_variance
from .bounds import BoundResult, PhaseBound, dsignsgd_phase_bound, pl_bound, pl_bound_for
from .curves import (
    CurveResult,
    dsignsgd_lattice_curve,
    linear_coefficients,
    loss_curve,
    moment_curve,
)
from .model import QuadraticModel
from .stability import check_stable, stability_limit
from .stationary import linear_speedup, stationary_loss, stationary_moments

__all__ = [
    "BoundResult",
    "CurveResult",
    "PhaseBound",
    "QuadraticModel",
    "check_stable",
    "dsignsgd_lattice_curve",
    "dsignsgd_phase_bound",
    "ell",
    "linear_coefficients",
    "linear_speedup",
    "loss_curve",
    "moment_curve",
    "pl_bound",
    "pl_bound_for",
    "sign_mean",
    "stability_limit",
    "stationary_loss",
    "stationary_moments",
    "unit_variance",
]
