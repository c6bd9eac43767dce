"""The weak order of an SDE, measured: a learning-rate sweep at fixed SDE time (THEORY.md §3).

:func:`lr_sweep` measures the weak error ``|E f(x_k) − E f(X_{kη})|`` at a fixed SDE time
``T = kη`` for several η and fits its slope on log–log axes; order-1 weak approximation predicts
slope 1. :meth:`LrSweep.first_order_budget` turns the sweep into the budget ``(C + k·se_C)·η``
that :mod:`compsde.validate` grants a comparison at one learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._checks import check_float, check_int
from .sde import simulate_sde
from .simulation import simulate
from .verdicts import check, panel

# The weak-error slope of an order-1 model is 1 up to O(η) curvature of err(η) over the swept
# range (THEORY.md §3, §8); 0.15 covers it over lrs within a factor 8 at the sizes of the docs.
WEAK_ORDER_BUDGET = 0.15


@dataclass
class LrSweep:
    """Weak error ``|E f(x_k) − E f(X_T)|`` at ``T = kη`` for several η, and its fitted slope."""

    lrs: np.ndarray
    errors: np.ndarray
    se: np.ndarray
    horizon: float
    slope: float
    intercept: float
    substeps: int
    details: list[dict[str, Any]] = field(default_factory=list)
    slope_se: float = float("nan")

    @property
    def resolved(self) -> np.ndarray:
        """Points whose error exceeds 2 standard errors (the rest are Monte-Carlo noise)."""
        return self.errors > 2.0 * self.se

    @property
    def judgement(self) -> dict[str, Any]:
        """Order 1: the slope fitted on the resolved points is 1 within 4·se + the budget."""
        resolved = int(self.resolved.sum())
        checks = [check("learning rates whose weak error is resolved (> 2 se)", resolved, 2.0,
                        relation="at_least", k=0.0),
                  check("log-log slope of the weak error against lr", self.slope, 1.0,
                        se=self.slope_se if np.isfinite(self.slope_se) else 0.0,
                        absolute=WEAK_ORDER_BUDGET,
                        rule=f"order-1 weak approximation: the fitted slope is 1 within "
                             f"4·se + {WEAK_ORDER_BUDGET:g}")]
        return panel(checks)

    def first_order_constant(self, exclude: float | None = None) -> tuple[float, float, int]:
        """``C`` of the first-order term ``err ≈ C·η`` (weighted least squares through 0 over
        the resolved points, leaving out ``exclude``), its se, and the points used."""
        keep = self.resolved.copy()
        if exclude is not None:
            keep &= ~np.isclose(self.lrs, exclude, rtol=1e-9, atol=0.0)
        if not keep.any():
            return math.nan, math.nan, 0
        eta, err, se = self.lrs[keep], self.errors[keep], self.se[keep]
        weight = (eta / se) ** 2
        const = float(np.sum(weight * err / eta) / np.sum(weight))
        return const, float(1.0 / math.sqrt(np.sum(weight))), int(keep.sum())

    def first_order_budget(self, lr: float, k: float = 2.0) -> tuple[float, str]:
        """The weak-error budget ``(C + k·se_C)·η`` the sweep grants a comparison at ``lr``.

        ``C`` is fitted on the sweep's other learning rates (not on a run at ``lr`` itself),
        and only when the sweep's verdict is pass (the model is first order); else 0.
        """
        const, se, used = self.first_order_constant(exclude=lr)
        if self.judgement["verdict"] != "pass" or used == 0 or not math.isfinite(const):
            return 0.0, "none: the lr sweep did not establish a first-order term"
        budget = (const + k * se) * lr
        return budget, (f"C = {const:.3g} ± {se:.2g} fitted through 0 on {used} other "
                        f"learning rate(s) of the sweep at T = {self.horizon:g}, times η = "
                        f"{lr:g}, C + {k:g}·se")

    def to_dict(self) -> dict[str, Any]:
        judged = self.judgement
        return {"lrs": self.lrs, "weak_error": self.errors, "weak_error_se": self.se,
                "resolved": self.resolved, "horizon": self.horizon, "slope": self.slope,
                "slope_se": self.slope_se, "intercept": self.intercept,
                "substeps": self.substeps, "per_lr": self.details,
                **{k: judged[k] for k in ("verdict", "quantity", "measured", "predicted",
                                          "tolerance", "margin", "rule", "checks")}}


def fit_slope(lrs: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """Least-squares ``log err = slope · log lr + intercept`` over positive errors."""
    keep = errors > 0
    if keep.sum() < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.log(lrs[keep]), np.log(errors[keep]), 1)
    return float(slope), float(intercept)


def slope_standard_error(lrs: np.ndarray, errors: np.ndarray, se: np.ndarray) -> float:
    """Standard error of the fitted slope from the points' own errors (delta method:
    ``se(log err) = se/err``), over the resolved points (``err > 2 se``)."""
    keep = errors > 2.0 * se
    if keep.sum() < 2:
        return float("nan")
    x = np.log(lrs[keep])
    centred = x - x.mean()
    return float(np.sqrt(np.sum(centred**2 * (se[keep] / errors[keep]) ** 2))
                 / np.sum(centred**2))


def momentum_rate_of(method: Any, lr: float) -> float | None:
    """Signum's ``c = (1 − β)/η`` at ``lr`` (the pair SDE's scaling, THEORY.md §8a), else None."""
    from .methods import Method, make

    built = method if isinstance(method, Method) else make(method)
    return (1.0 - built.beta) / lr if built.name == "signum" else None


def _at_rate(method: str, rate: float, lr: float) -> str:
    """Signum's spec at ``lr`` with ``β = 1 − c·η`` (c = ``rate``)."""
    from .methods import make

    built = make(method)
    if built.name != "signum":
        raise ValueError(f"momentum_rate applies to signum only, got method {method!r}")
    beta = 1.0 - rate * lr
    if not 0.0 < beta < 1.0:
        raise ValueError(f"lrs must keep beta = 1 − c·lr in (0, 1) at c = {rate:g}, got "
                         f"lr = {lr:g} (beta = {beta:g})")
    return f"signum:beta={beta!r}" + (",vote=majority" if built.vote else "")


def lr_sweep(method: str, landscape: str, noise: str, *, lrs: Sequence[float], horizon: float,
             runs: int = 2000, substeps: int = 8, stability: bool = False,
             moments: str = "auto", batch_noise: str = "scale",
             momentum_rate: float | None = None, **common: Any) -> LrSweep:
    """Weak error at SDE time ``horizon`` for each learning rate in ``lrs``.

    The algorithm takes ``round(horizon/η)`` steps; the SDE is integrated with ``substeps``
    Euler–Maruyama steps per iteration (``dt = η/substeps``) so the integrator's own O(dt) error
    stays well below the O(η) model error being measured. ``common`` as in :func:`validate`.
    ``momentum_rate`` (Signum): hold ``c = (1 − β)/η`` fixed, ``β = 1 − c·η`` at each lr, the
    scaling in which the pair SDE is the limit (THEORY.md §8a).
    """
    values = sorted({check_float("lrs", v, low=0.0, low_open=True) for v in lrs})
    if len(values) < 2:
        raise ValueError(f"lrs must hold at least 2 distinct learning rates > 0, got {list(lrs)}")
    specs = {lr: method for lr in values}
    if momentum_rate is not None:
        rate = check_float("momentum_rate", momentum_rate, low=0.0, low_open=True)
        specs = {lr: _at_rate(method, rate, lr) for lr in values}
    horizon = check_float("horizon", horizon, low=0.0, low_open=True)
    substeps = check_int("substeps", substeps, minimum=1)
    runs = check_int("runs", runs, minimum=2)  # standard errors need two runs
    common.pop("record_every", None)
    errors, ses, details = [], [], []
    for lr in values:
        steps = max(1, round(horizon / lr))
        kw = dict(lr=lr, steps=steps, runs=runs, **common, record_every=steps)
        alg = simulate(specs[lr], landscape, noise, batch_noise=batch_noise, **kw)
        sde = simulate_sde(specs[lr], landscape, noise, dt=lr / substeps, stability=stability,
                           moments=moments, **kw)
        err = abs(alg.loss_mean[-1] - sde.loss_mean[-1])
        se = float(np.hypot(alg.loss_se[-1], sde.loss_se[-1]))
        errors.append(err)
        ses.append(se)
        details.append({"lr": lr, "method": specs[lr], "steps": steps,
                        "algorithm": alg.loss_mean[-1],
                        "algorithm_se": alg.loss_se[-1], "sde": sde.loss_mean[-1],
                        "sde_se": sde.loss_se[-1], "weak_error": err, "se": se})
    lr_arr, err_arr, se_arr = np.array(values), np.array(errors), np.array(ses)
    keep = err_arr > 2.0 * se_arr
    slope, intercept = fit_slope(lr_arr[keep], err_arr[keep]) if keep.sum() >= 2 \
        else (float("nan"), float("nan"))
    return LrSweep(lr_arr, err_arr, se_arr, horizon, slope, intercept, substeps, details,
                   slope_standard_error(lr_arr, err_arr, se_arr))
