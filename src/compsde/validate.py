"""Does the SDE track the algorithm? Side-by-side runs with Monte-Carlo error bars (THEORY.md §3).

EF21 with a mask compressor on a diagonal quadratic has no SDE here but exact second moments
(THEORY.md §8b): :func:`validate` hands it to :mod:`compsde.validate_exact`, which judges its
mean loss curve against the exact ``E f_k`` and its late-window mean against the stationary
level.

:func:`validate` runs the discrete algorithm (:func:`~compsde.simulation.simulate`) and its SDE
(:func:`~compsde.sde.simulate_sde`) on one config and compares the mean-loss curves: at each
record the gap ``|mean_alg − mean_sde|`` against ``z · √(se_alg² + se_sde²)`` (both runs are
independent, so this is the Monte-Carlo standard error of the gap). :func:`lr_sweep` measures
the weak error ``|E f(x_k) − E f(X_{kη})|`` at a fixed SDE time ``T = kη`` for several η and
fits its slope on log–log axes; order-1 weak approximation predicts slope 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._checks import check_float, check_int
from .recording import RunResult
from .sde import simulate_sde
from .simulation import simulate
from .verdicts import Budget, check, panel

Z_DEFAULT = 4.0
# The spread (std of the loss across runs) of a first-order SDE matches the algorithm's to
# first order only, and through the fourth moments of the increments, which a Gaussian
# diffusion does not reproduce (Rand-k's kurtosis grows like d/k): THEORY.md §3, §10.
SPREAD_BUDGET = Budget(
    "first-order spread", 0.25,
    "THEORY.md §3, §10: the spread of the loss depends on the increments' fourth moments, "
    "which the Gaussian diffusion matches only to first order; a wrong diffusion coefficient "
    "c moves the spread by about √c (×2 covariance: +41 %; DSignSGD without −m²: orders of "
    "magnitude in Phase 1)")
ROUNDOFF = 1e-9  # relative spread below which a record is deterministic (round-off only)
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


def compare_spread_ratio(a: RunResult, b: RunResult, k: float = Z_DEFAULT,
                         budget: Budget = SPREAD_BUDGET) -> dict[str, Any]:
    """The spreads of two independent results as a ratio, at the records where both resolve.

    A record is judged when both spreads exceed ``k`` of their se (se > 0) and
    :data:`ROUNDOFF` times the mean loss, so a deterministic stretch (every run the same, se 0)
    is reported, not judged. At a judged record ``z = (|log(s_a/s_b)| − log(1 + β))₊ /
    √((se_a/s_a)² + (se_b/s_b)²)`` with ``β = budget.relative``; the spreads agree when every
    ``z ≤ k``. Well defined where the spread is near zero: such records drop out.
    """
    (sa, ea), (sb, eb) = spread_curve(a), spread_curve(b)
    floor = ROUNDOFF * np.maximum(np.abs(a.loss_mean), np.abs(b.loss_mean))
    judged = (ea > 0) & (eb > 0) & (sa > k * ea) & (sa > floor) & (sb > k * eb) & (sb > floor)
    judged[0] = False                                    # the shared start
    with np.errstate(invalid="ignore", divide="ignore"):
        log_ratio = np.where(judged, np.log(sa / sb), 0.0)
        rel_se = np.where(judged, np.hypot(ea / sa, eb / sb), 1.0)
    excess = np.maximum(np.abs(log_ratio) - math.log1p(budget.relative), 0.0)
    zs = np.where(judged, excess / rel_se, 0.0)
    worst = int(np.argmax(np.where(judged, zs, -1.0)))
    return {"spread_algorithm": sa, "spread_algorithm_se": ea, "spread_other": sb,
            "spread_other_se": eb, "judged": judged, "judged_records": int(judged.sum()),
            "max_z": float(zs.max()) if judged.any() else 0.0,
            "max_z_step": int(a.steps[worst]),
            "ratio_at_worst": float(sa[worst] / sb[worst]) if judged.any() else math.nan,
            "budget": budget, "k": k}


def spread_check(stats: dict[str, Any], what: str) -> dict[str, Any]:
    """The verdict of :func:`compare_spread_ratio`: the largest z over judged records ≤ k."""
    k, budget = stats["k"], stats["budget"]
    return check(f"{what}: largest excess of |log spread ratio| over log(1 + "
                 f"{budget.relative:g}), in se", stats["max_z"], 0.0, relation="at_most",
                 k=0.0, absolute=k,
                 rule=f"{what}: at every record where both spreads are resolved "
                      f"({stats['judged_records']} records) the across-run spreads of the loss "
                      f"agree within a factor 1 + {budget.relative:g} ({budget.name}) + {k:g}·se "
                      f"(worst at step {stats['max_z_step']}, ratio "
                      f"{stats['ratio_at_worst']:.3g})")


@dataclass
class Validation:
    """The algorithm and its SDE on one config, with the gap statistics."""

    algorithm: RunResult
    sde: RunResult
    stats: dict[str, Any]
    first_order: float = 0.0
    first_order_source: str = "none (Monte-Carlo error only; --lr-sweep measures the SDE's " \
                              "O(η) term)"
    spread: dict[str, Any] | None = None
    reference_label = "SDE"

    @property
    def tolerance_curve(self) -> np.ndarray:
        """Per record: ``z · se of the gap + first_order`` (the O(η) weak-error budget)."""
        return self.stats["z"] * np.hypot(self.algorithm.loss_se, self.sde.loss_se) \
            + self.first_order

    def _mean_excess(self) -> tuple[float, int]:
        """Largest ``(gap − first_order)/se`` over records (the start skipped), and its step."""
        gap = self.stats["gap"]
        se = np.hypot(self.algorithm.loss_se, self.sde.loss_se)
        excess = gap - self.first_order
        with np.errstate(invalid="ignore", divide="ignore"):
            zs = np.where(se > 0, excess / se, np.where(excess > 0, np.inf, 0.0))
        zs = np.where(np.isfinite(gap), zs, np.inf)[1:] if len(gap) > 1 else zs
        worst = int(np.argmax(zs))
        return float(zs[worst]), int(self.algorithm.steps[worst + (1 if len(gap) > 1 else 0)])

    @property
    def judgement(self) -> dict[str, Any]:
        """The verdict: every mean gap within ``z`` se + the first-order budget, and (where
        resolved) the spreads within :data:`SPREAD_BUDGET` + ``z`` se."""
        z = self.stats["z"]
        excess, step = self._mean_excess()
        budget = f" + {self.first_order:.3g} (first-order term C·η: " \
                 f"{self.first_order_source})" if self.first_order else ""
        checks = [check("largest gap between the mean curves beyond the first-order budget, "
                        "in se of the gap", excess, 0.0, relation="at_most", k=0.0,
                        absolute=z,
                        rule=f"at every record |mean_algorithm − mean_SDE| ≤ {z:g}·se of the "
                             f"gap{budget} (worst at step {step})")]
        if self.spread is not None and self.spread["judged_records"]:
            checks.append(spread_check(self.spread, "algorithm vs SDE"))
        return panel(checks)

    @property
    def verdict(self) -> str:
        return self.judgement["verdict"]

    def to_dict(self) -> dict[str, Any]:
        judged = self.judgement
        spread = None
        if self.spread is not None:
            spread = {k: v for k, v in self.spread.items() if k != "budget"} | {
                "budget": self.spread["budget"].to_dict()}
        return {"config": self.algorithm.config | {"kind": "validation"},
                "sde_config": self.sde.config, "steps": self.algorithm.steps,
                "time": self.algorithm.time, "algorithm": _curve(self.algorithm),
                "sde": _curve(self.sde), **self.stats,
                "first_order_budget": self.first_order,
                "first_order_source": self.first_order_source,
                "gap_tolerance": self.tolerance_curve, "spread": spread,
                "checks": judged["checks"],
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
    rate of 6e-5). EF21 goes to :func:`validate_exact` (``dt``, ``moments`` unused there;
    ``stability=True`` refused).
    """
    from .validate_exact import exact_reference, validate_exact

    if exact_reference(method) is not None:
        if stability:
            raise ValueError(f"stability applies to an SDE; {method} is judged against its "
                             f"exact discrete moments (THEORY.md §8b)")
        return validate_exact(method, landscape, noise, lr=lr, steps=steps, runs=runs, z=z,
                              batch_noise=batch_noise, **common)
    z = check_float("z", z, low=0.0, low_open=True)
    runs = check_int("runs", runs, minimum=2)  # standard errors need two runs
    alg = simulate(method, landscape, noise, lr=lr, steps=steps, runs=runs,
                   batch_noise=batch_noise, **common)
    sde = simulate_sde(method, landscape, noise, lr=lr, steps=steps, runs=runs, dt=dt,
                       stability=stability, moments=moments, **common)
    return Validation(alg, sde, compare_curves(alg, sde, z),
                      spread=compare_spread_ratio(alg, sde, z))


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
