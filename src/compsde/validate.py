"""Does the SDE track the algorithm? Side-by-side runs with Monte-Carlo error bars (THEORY.md §3).

:func:`validate` runs the discrete algorithm (:func:`~compsde.simulation.simulate`) and its SDE
(:func:`~compsde.sde.simulate_sde`) on one config and compares the mean-loss curves: at each
record the gap ``|mean_alg − mean_sde|`` against ``z · √(se_alg² + se_sde²)`` (both runs are
independent, so this is the Monte-Carlo standard error of the gap). :func:`lr_sweep` measures
the weak error ``|E f(x_k) − E f(X_{kη})|`` at a fixed SDE time ``T = kη`` for several η and
fits its slope on log–log axes; order-1 weak approximation predicts slope 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._checks import check_float, check_int
from .recording import RunResult
from .sde import simulate_sde
from .simulation import simulate
from .verdicts import check, panel

Z_DEFAULT = 4.0
# The weak-error slope of an order-1 model is 1 up to O(η) curvature of err(η) over the swept
# range (THEORY.md §3, §8); 0.15 covers it over lrs within a factor 8 at the sizes of the docs.
WEAK_ORDER_BUDGET = 0.15


def _curve(result: RunResult, z_ci: float = 1.96) -> dict[str, Any]:
    return {"loss_mean": result.loss_mean, "loss_se": result.loss_se,
            "ci_low": result.loss_mean - z_ci * result.loss_se,
            "ci_high": result.loss_mean + z_ci * result.loss_se,
            "diverged_fraction": result.diverged_fraction}


def _gap_statistics(values_a: np.ndarray, se_a: np.ndarray, values_b: np.ndarray,
                    se_b: np.ndarray, steps: np.ndarray, z: float,
                    skip_first: bool) -> dict[str, Any]:
    """Per-record gap of two independent curves against ``z · √(se_a² + se_b²)``."""
    gap = np.abs(values_a - values_b)
    se = np.hypot(se_a, se_b)
    tol = z * se
    rows = slice(1, None) if skip_first and len(gap) > 1 else slice(None)
    with np.errstate(invalid="ignore", divide="ignore"):
        zs = np.where(se > 0, gap / se, np.where(gap > 0, np.inf, 0.0))
    worst = int(np.nanargmax(zs[rows])) + (rows.start or 0)
    return {"gap": gap, "tolerance": tol, "z": z, "max_z": float(np.nanmax(zs[rows])),
            "max_z_step": int(steps[worst]), "rows": rows,
            "agree": bool(np.isfinite(gap[rows]).all() and (gap[rows] <= tol[rows]).all())}


def compare_curves(a: RunResult, b: RunResult, z: float = Z_DEFAULT,
                   skip_first: bool = True) -> dict[str, Any]:
    """Gap statistics of two independent mean-loss curves recorded at the same steps.

    ``tolerance_k = z √(se_a² + se_b²)``; the curves agree when every gap is within it.
    The first record (the shared, deterministic start) is skipped by default.
    """
    if a.loss_mean.shape != b.loss_mean.shape:
        raise ValueError(f"the two results must have the same records, got "
                         f"{a.loss_mean.shape} and {b.loss_mean.shape}")
    stats = _gap_statistics(a.loss_mean, a.loss_se, b.loss_mean, b.loss_se, a.steps, z,
                            skip_first)
    rows = stats.pop("rows")
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = stats["gap"] / np.abs(a.loss_mean)
    return stats | {"max_relative_gap": float(np.nanmax(rel[rows]))}


def spread_curve(result: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """Across-run standard deviation of the loss per record, and its standard error.

    ``se(s) ≈ √((m₄ − s⁴)/R) / (2s)`` (delta method on the sample variance; m₄ the fourth
    central moment), over the runs that have not diverged.
    """
    losses = result.losses
    finite = np.isfinite(losses)
    count = np.maximum(finite.sum(axis=1), 2)
    safe = np.where(finite, losses, 0.0)
    mean = safe.sum(axis=1) / count
    dev = np.where(finite, losses - mean[:, None], 0.0)
    var = (dev**2).sum(axis=1) / (count - 1)
    m4 = (dev**4).sum(axis=1) / count
    std = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(std > 0, np.sqrt(np.maximum(m4 - var**2, 0.0) / count) / (2 * std), 0.0)
    return std, se


def compare_spread(a: RunResult, b: RunResult, z: float = Z_DEFAULT,
                   skip_first: bool = True) -> dict[str, Any]:
    """Gap statistics of the across-run spread (std of the loss) of two independent results.

    The mean curve of a drift-dominated run hardly depends on the diffusion; the spread across
    runs does: with ``S`` scaled by c the spread scales by about √c.
    """
    (sa, ea), (sb, eb) = spread_curve(a), spread_curve(b)
    stats = _gap_statistics(sa, ea, sb, eb, a.steps, z, skip_first)
    stats.pop("rows")
    return stats | {"spread_algorithm": sa, "spread_other": sb}


@dataclass
class Validation:
    """The algorithm and its SDE on one config, with the gap statistics."""

    algorithm: RunResult
    sde: RunResult
    stats: dict[str, Any]

    @property
    def judgement(self) -> dict[str, Any]:
        """The verdict: the largest gap of the mean curves, in se, is at most ``z``."""
        z = self.stats["z"]
        return panel([check("largest gap between the mean curves, in se of the gap",
                            self.stats["max_z"], 0.0, relation="at_most", k=0.0, absolute=z,
                            rule=f"at every record |mean_algorithm − mean_SDE| ≤ {z:g}·se "
                                 f"of the gap (worst at step {self.stats['max_z_step']})")])

    @property
    def verdict(self) -> str:
        return self.judgement["verdict"]

    def to_dict(self) -> dict[str, Any]:
        judged = self.judgement
        return {"config": self.algorithm.config | {"kind": "validation"},
                "sde_config": self.sde.config, "steps": self.algorithm.steps,
                "time": self.algorithm.time, "algorithm": _curve(self.algorithm),
                "sde": _curve(self.sde), **self.stats,
                **{k: judged[k] for k in ("quantity", "measured", "predicted", "tolerance",
                                          "margin", "rule")}, "verdict": self.verdict}


def validate(method: str, landscape: str, noise: str, *, lr: float, steps: int,
             runs: int = 500, z: float = Z_DEFAULT, dt: float | None = None,
             stability: bool = False, moments: str = "auto", batch_noise: str = "scale",
             **common: Any) -> Validation:
    """Run the algorithm and its SDE on the same config and compare their mean losses.

    ``common`` takes the remaining arguments of :func:`~compsde.simulation.simulate` (agents,
    batch, seed, x0, dtype, device, record_every, …). ``batch_noise`` goes to the algorithm
    only: with ``"mean"`` it averages B draws while the SDE keeps the σ/√B convention (§1a).
    ``z`` sets the tolerance in standard errors of the gap (default 4: a per-record false alarm
    rate of 6e-5).
    """
    z = check_float("z", z, low=0.0, low_open=True)
    runs = check_int("runs", runs, minimum=2)  # standard errors need two runs
    alg = simulate(method, landscape, noise, lr=lr, steps=steps, runs=runs,
                   batch_noise=batch_noise, **common)
    sde = simulate_sde(method, landscape, noise, lr=lr, steps=steps, runs=runs, dt=dt,
                       stability=stability, moments=moments, **common)
    return Validation(alg, sde, compare_curves(alg, sde, z))


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


def lr_sweep(method: str, landscape: str, noise: str, *, lrs: Sequence[float], horizon: float,
             runs: int = 2000, substeps: int = 8, stability: bool = False,
             moments: str = "auto", batch_noise: str = "scale", **common: Any) -> LrSweep:
    """Weak error at SDE time ``horizon`` for each learning rate in ``lrs``.

    The algorithm takes ``round(horizon/η)`` steps; the SDE is integrated with ``substeps``
    Euler–Maruyama steps per iteration (``dt = η/substeps``) so the integrator's own O(dt) error
    stays well below the O(η) model error being measured. ``common`` as in :func:`validate`.
    """
    values = sorted({check_float("lrs", v, low=0.0, low_open=True) for v in lrs})
    if len(values) < 2:
        raise ValueError(f"lrs must hold at least 2 distinct learning rates > 0, got {list(lrs)}")
    horizon = check_float("horizon", horizon, low=0.0, low_open=True)
    substeps = check_int("substeps", substeps, minimum=1)
    runs = check_int("runs", runs, minimum=2)  # standard errors need two runs
    common.pop("record_every", None)
    errors, ses, details = [], [], []
    for lr in values:
        steps = max(1, round(horizon / lr))
        kw = dict(lr=lr, steps=steps, runs=runs, **common, record_every=steps)
        alg = simulate(method, landscape, noise, batch_noise=batch_noise, **kw)
        sde = simulate_sde(method, landscape, noise, dt=lr / substeps, stability=stability,
                           moments=moments, **kw)
        err = abs(alg.loss_mean[-1] - sde.loss_mean[-1])
        se = float(np.hypot(alg.loss_se[-1], sde.loss_se[-1]))
        errors.append(err)
        ses.append(se)
        details.append({"lr": lr, "steps": steps, "algorithm": alg.loss_mean[-1],
                        "algorithm_se": alg.loss_se[-1], "sde": sde.loss_mean[-1],
                        "sde_se": sde.loss_se[-1], "weak_error": err, "se": se})
    lr_arr, err_arr, se_arr = np.array(values), np.array(errors), np.array(ses)
    keep = err_arr > 2.0 * se_arr
    slope, intercept = fit_slope(lr_arr[keep], err_arr[keep]) if keep.sum() >= 2 \
        else (float("nan"), float("nan"))
    return LrSweep(lr_arr, err_arr, se_arr, horizon, slope, intercept, substeps, details,
                   slope_standard_error(lr_arr, err_arr, se_arr))
