"""How heavy is the gradient noise's tail? Student-t fit, Hill index, kurtosis (THEORY.md §1, §6).

**Model.** Coordinate ``j`` of the ``m``-th mini-batch gradient is ``x_{mj} = μ_j + σ_j T_{mj}``,
``T ~ t_ν`` i.i.d., one ν shared by all coordinates, per-coordinate location μ_j and scale σ_j
(σ a *scale*, not a standard deviation; THEORY.md §1). This is the paper's noise model, so the
maximum-likelihood fit is efficient for it, it returns the scale the closed forms need, and it
stays finite and smooth for ν ≤ 2 (infinite variance) where moments break down.

**Estimator.** Profile likelihood in ν: for fixed ν the per-coordinate (μ_j, σ_j) are found by
EM (weights ``w = (ν+1)/(ν + r²)``, ``μ = Σwx/Σw``, ``σ² = Σw(x−μ)²/Σw``: the parameter-expanded
form of Kent, Tyler & Vardi 1994, same fixed point as ``/M`` since Σw = M at the MLE, faster),
vectorised over coordinates; ν maximises the profile log-likelihood (bounded scalar search in
log ν). Estimating 2 nuisance parameters per coordinate from M samples biases ν̂ by O(1/M)
(the incidental-parameter problem); the **split-panel jackknife** of Dhaene & Jochmans (2015)
removes that term: with ξ = 1/ν, ``ξ̃ = 2ξ̂_M − ½(ξ̂_{first half} + ξ̂_{second half})`` (ξ̃ ≤ 0
means Gaussian, ν = ∞). The same jackknife gives a common correction of log σ̂. The standard
error of ξ̂ comes from the curvature of the profile log-likelihood (observed information); the
jackknife leaves it unchanged to first order.

**Hill** (model-free cross-check, the classic estimator for α-stable / Pareto-type tails):
``α̂ = [ (1/k) Σ_{i<k} log(|z|_{(i)}/|z|_{(k)}) ]^{-1}`` on the k largest pooled |standardised
noise| values, ``se ≈ α̂/√k``; default ``k = ⌊√n⌋`` (small k keeps the second-order bias of
Student-t tails, ρ = −2/ν, low; for a Gaussian it reports a large finite α, not ∞).
**Kurtosis**: for Student-t, excess kurtosis ``6/(ν − 4)`` (ν > 4), so ``ν = 4 + 6/κ``
(moment estimate; undefined for ν ≤ 4, where the sample kurtosis does not converge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.optimize import minimize_scalar
from scipy.special import gammaln
from torch import Tensor

from .._checks import check_int

NU_MIN = 0.2          # search range of ν; at NU_MAX the t law is Gaussian for our purposes
NU_MAX = 400.0
_EM_TOL = 1e-4      # relative; the log-likelihood error is second order in it (≪ the
                    # differences the ν search resolves, ~1e-2 at xatol 3e-3)
_SCALE_TOL = 1e-4   # per-coordinate scales: far below their sampling error ~1/√M
_EM_MAX_ITER = 2000


@dataclass(frozen=True)
class StudentTFit:
    """Result of :func:`fit_student_t`; ``nu`` is ``math.inf`` for Gaussian-like noise.

    ``loc``/``scale`` have one entry per column; ``degenerate`` marks columns whose samples are
    (mostly) one repeated value (no noise to fit, scale 0). ``nu_interval`` is the 95 % Wald
    interval built in ξ = 1/ν. ``nu_raw`` is the uncorrected maximum-likelihood value.
    ``log_scale_se`` is the standard error of the mean of ``log σ̂_j`` over the fitted columns:
    independent part ``(ν+3)/(2Mν)`` per column (Fisher information of log σ at known ν) plus
    the common shift ``(∂ mean log σ̂/∂ν) · se(ν̂)`` (all scales move together with ν̂).
    """

    nu: float
    nu_se: float | None
    nu_interval: tuple[float, float]
    nu_raw: float
    loc: Tensor
    scale: Tensor
    degenerate: Tensor
    samples: int
    columns_for_nu: int
    log_scale_se: float
    xi_se: float | None

    @property
    def finite_variance(self) -> bool:
        return self.nu > 2.0

    @property
    def xi(self) -> float:
        return 0.0 if math.isinf(self.nu) else 1.0 / self.nu


@dataclass(frozen=True)
class HillEstimate:
    """Hill tail index α̂ with its asymptotic standard error α̂/√k."""

    alpha: float
    se: float
    k: int
    n: int


# -- Student-t maximum likelihood -------------------------------------------------------------
def _log_norm(nu: float) -> float:
    """log of the t_ν density's constant Γ((ν+1)/2)/(√(πν) Γ(ν/2))."""
    return float(gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi))


def _em(x: Tensor, nu: float, loc: Tensor, scale: Tensor,
        tol: float = _EM_TOL) -> tuple[Tensor, Tensor]:
    """EM for the per-column t location/scale at fixed ν (Gaussian closed form for ν = ∞)."""
    if math.isinf(nu):
        loc = x.mean(0)
        return loc, (x - loc).pow(2).mean(0).sqrt()
    for _ in range(_EM_MAX_ITER):
        r = (x - loc) / scale
        w = (nu + 1.0) / (nu + r * r)
        new_loc = (w * x).sum(0) / w.sum(0)
        new_scale = ((w * (x - new_loc).pow(2)).sum(0) / w.sum(0)).sqrt()   # PX-EM
        change = torch.maximum((new_loc - loc).abs(), (new_scale - scale).abs()) / scale
        loc, scale = new_loc, new_scale
        if float(change.max()) < tol:
            break
    return loc, scale


def _loglik(x: Tensor, nu: float, loc: Tensor, scale: Tensor) -> float:
    r2 = ((x - loc) / scale).pow(2)
    m = x.shape[0]
    if math.isinf(nu):
        return float(-0.5 * x.numel() * math.log(2 * math.pi) - m * scale.log().sum()
                     - 0.5 * r2.sum())
    return float(x.numel() * _log_norm(nu) - m * scale.log().sum()
                 - 0.5 * (nu + 1.0) * torch.log1p(r2 / nu).sum())


def _start(x: Tensor) -> tuple[Tensor, Tensor]:
    loc = x.median(dim=0).values
    dev = (x - loc).abs()
    scale = dev.median(dim=0).values
    return loc, torch.where(scale > 0, scale, dev.mean(0))


class _Profile:
    """Profile log-likelihood ℓ(ν) of a sample matrix, EM warm-started between calls."""

    def __init__(self, x: Tensor):
        self.x = x
        self.loc, self.scale = _start(x)
        self.cache: dict[float, float] = {}

    def __call__(self, nu: float) -> float:
        if nu not in self.cache:
            if math.isinf(nu):
                loc, scale = _em(self.x, nu, self.loc, self.scale)
            else:
                self.loc, self.scale = loc, scale = _em(self.x, nu, self.loc, self.scale)
            self.cache[nu] = _loglik(self.x, nu, loc, scale)
        return self.cache[nu]

    def argmax(self, near: float | None = None, step: float = 0.1) -> float:
        """ν̂ on [NU_MIN, NU_MAX] (bounded search in log ν); ``inf`` if the Gaussian is better.

        With ``near`` (the halves of the jackknife land close to the full-sample estimate) the
        maximum is sought by parabolic steps through log ν = u + {−h, 0, h} (``h = step``,
        moves capped at 3h, up to 5 rounds); if that does not settle, a bounded search on
        ``log near ± 1.5`` takes over, and the full range only if that one ends on its edge.
        """
        lo, hi = math.log(NU_MIN), math.log(NU_MAX)
        if near is not None and math.isfinite(near):
            u0 = u = math.log(near)
            for _ in range(5):
                if not lo + step <= u <= hi - step:
                    break
                f = [self(math.exp(u + k * step)) for k in (-1, 0, 1)]
                curv = f[0] - 2 * f[1] + f[2]
                if curv < 0:                       # concave: jump to the parabola's vertex
                    shift = 0.5 * step * (f[0] - f[2]) / curv
                else:                              # not yet near the top: go uphill
                    shift = math.copysign(3 * step, f[2] - f[0])
                shift = max(-3 * step, min(3 * step, shift))
                u += shift
                if abs(shift) < 0.25 * step:
                    return self._finish(math.exp(u))
            a, b = max(lo, u0 - 1.5), min(hi, u0 + 1.5)
            u = self._search(a, b)
            if (u - a > 0.01 or a == lo) and (b - u > 0.01 or b == hi):
                return self._finish(math.exp(u))
        return self._finish(math.exp(self._search(lo, hi)))

    def _search(self, lo: float, hi: float) -> float:
        res = minimize_scalar(lambda u: -self(math.exp(u)), method="bounded", bounds=(lo, hi),
                              options={"xatol": 3e-3})
        return float(res.x)

    def _finish(self, nu: float) -> float:
        if nu > 0.9 * NU_MAX or self(math.inf) >= self(nu):
            return math.inf
        return nu

    def xi_se(self, nu: float) -> float | None:
        """√(1/−ℓ''(ξ)) at ξ = 1/ν by a central difference (None at the Gaussian boundary)."""
        if math.isinf(nu):
            return None
        xi = 1.0 / nu
        h = 0.02 * xi
        f0, fp, fm = self(nu), self(1.0 / (xi + h)), self(1.0 / (xi - h))
        curv = -(fp - 2 * f0 + fm) / (h * h)
        return 1.0 / math.sqrt(curv) if curv > 0 else None


def _mean_logs(scales: list[Tensor]) -> list[float]:
    """Mean log σ̂ of each of ``scales`` (same columns) over the columns where all of them are
    positive: a column whose EM collapsed onto a tie (σ̂ → 0) would make every mean −∞."""
    ok = torch.stack([torch.isfinite(s) & (s > 0) for s in scales]).all(0)
    if not bool(ok.any()):
        return [0.0] * len(scales)
    return [float(s[ok].log().mean()) for s in scales]


def _collapsed(x: Tensor, scale: Tensor) -> Tensor:
    """Columns whose fitted scale collapsed (σ̂ ≤ 1e-9 of the mean absolute deviation, or not
    finite): a point mass (many equal values, e.g. a gradient that is exactly 0 in most small
    mini-batches) that the t law's likelihood runs off to σ → 0 on."""
    spread = (x - x.median(dim=0).values).abs().mean(0)
    return ~(torch.isfinite(scale) & (scale > 1e-9 * spread))


def _valid_columns(x: Tensor) -> Tensor:
    """Columns with real spread: fewer than half of the samples equal to the median."""
    med = x.median(dim=0).values
    ties = (x == med).sum(0)
    return ties * 2 < x.shape[0]


def fit_student_t(samples: Tensor, *, nu_columns: int = 500,
                  generator: torch.Generator | None = None) -> StudentTFit:
    """Fit ``x_{mj} = μ_j + σ_j T``, ``T ~ t_ν`` to ``samples`` of shape (M, d) (module docstring).

    ν is estimated (with the split-panel jackknife) on at most ``nu_columns`` columns drawn
    without replacement with ``generator`` (all columns when there are fewer); every column then
    gets its (μ_j, σ_j) at that ν. Needs M ≥ 8 rows.
    """
    x = samples.detach().to(torch.float64)
    if x.dim() != 2:
        raise ValueError(f"samples must have shape (M, d), got {tuple(x.shape)}")
    m = check_int("samples rows (mini-batches)", x.shape[0], minimum=8)
    nu_columns = check_int("nu_columns", nu_columns, minimum=1)
    valid = _valid_columns(x)
    idx = valid.nonzero().squeeze(1)
    if idx.numel() == 0:
        raise ValueError("samples have no column with spread: the gradient noise is zero in "
                         "every coordinate (nothing to fit)")
    if idx.numel() > nu_columns:
        pick = torch.randperm(idx.numel(), generator=generator)[:nu_columns]
        idx = idx[pick.sort().values]
    sub = x[:, idx]
    half = m // 2
    full_p, first_p, second_p = _Profile(sub), _Profile(sub[:half]), _Profile(sub[half:2 * half])
    first = full_p.argmax()
    se_first = full_p.xi_se(first)
    # parabola step: 3 se of the full-sample log ν̂ (≈ 2 se of a half sample's)
    step = min(max(3.0 * se_first * first, 0.1), 0.5) if se_first else 0.1
    fits = [first, first_p.argmax(near=first, step=step),
            second_p.argmax(near=first, step=step)]
    xi_full, xi_a, xi_b = (0.0 if math.isinf(v) else 1.0 / v for v in fits)
    xi = max(2.0 * xi_full - 0.5 * (xi_a + xi_b), 0.0)
    nu = math.inf if xi <= 1.0 / NU_MAX else 1.0 / xi
    se_xi = se_first
    if se_xi is None:
        interval, nu_se = (0.0, math.inf), None
    else:
        hi_xi, lo_xi = xi + 1.96 * se_xi, xi - 1.96 * se_xi
        interval = (1.0 / hi_xi, 1.0 / lo_xi if lo_xi > 0 else math.inf)
        nu_se = se_xi * nu * nu if math.isfinite(nu) else None
    # scales at the jackknifed ν, with the jackknife shift of mean log σ̂ from the ν-columns
    sub_loc, sub_scale = _em(sub, nu, full_p.loc, full_p.scale)
    log_full, log_a, log_b = _mean_logs([sub_scale, *(_em(p.x, nu, p.loc, p.scale)[1]
                                                      for p in (first_p, second_p))])
    shift = log_full - 0.5 * (log_a + log_b)
    loc = torch.zeros(x.shape[1], dtype=torch.float64)
    scale = torch.zeros(x.shape[1], dtype=torch.float64)
    cols = valid.nonzero().squeeze(1)
    fit_loc, fit_scale = _em(x[:, cols], nu, *_start(x[:, cols]), tol=_SCALE_TOL)
    collapsed = _collapsed(x[:, cols], fit_scale)
    valid[cols[collapsed]] = False
    keep = ~collapsed
    loc[cols[keep]], scale[cols[keep]] = fit_loc[keep], fit_scale[keep] * math.exp(shift)
    if not bool(valid.any()):
        raise ValueError("samples have no column with spread: every coordinate's noise is a "
                         "point mass (ties) the t law cannot fit (nothing to fit)")
    loc[~valid] = x[:, ~valid].median(dim=0).values
    indep = (1.0 if math.isinf(nu) else (nu + 3.0) / nu) / (2.0 * m * int(valid.sum()))
    common = 0.0
    if se_xi is not None and math.isfinite(nu):   # d mean log σ̂ / dξ by a central difference
        h = 0.05 * xi
        up, down = _mean_logs([_em(sub, 1.0 / (xi + h), sub_loc, sub_scale)[1],
                               _em(sub, 1.0 / (xi - h), sub_loc, sub_scale)[1]])
        common = (up - down) / (2 * h) * se_xi
    return StudentTFit(nu=nu, nu_se=nu_se, nu_interval=interval, nu_raw=fits[0], loc=loc,
                       scale=scale, degenerate=~valid, samples=m, columns_for_nu=idx.numel(),
                       log_scale_se=math.sqrt(indep + common * common), xi_se=se_xi)


# -- Hill and moments -------------------------------------------------------------------------
def hill(values: Tensor, k: int | None = None) -> HillEstimate:
    """Hill estimate of the tail index of ``|values|`` (pooled, any shape; module docstring)."""
    a = values.detach().reshape(-1).abs().to(torch.float64)
    a = a[torch.isfinite(a) & (a > 0)]
    n = a.numel()
    if n < 16:
        raise ValueError(f"values must hold at least 16 non-zero finite entries, got {n}")
    k = math.isqrt(n) if k is None else check_int("k", k, minimum=2, maximum=n - 1)
    top = torch.topk(a, k + 1).values
    mean_log = float((top[:k].log() - top[k].log()).mean())
    alpha = math.inf if mean_log <= 0 else 1.0 / mean_log
    return HillEstimate(alpha=alpha, se=alpha / math.sqrt(k), k=k, n=n)


def nu_from_kurtosis(excess_kurtosis: float) -> float:
    """Moment estimate ``ν = 4 + 6/κ`` of Student-t (κ > 0); ``inf`` for κ ≤ 0 (Gaussian)."""
    return 4.0 + 6.0 / excess_kurtosis if excess_kurtosis > 0 else math.inf


def t_excess_kurtosis(nu: float) -> float:
    """Excess kurtosis ``6/(ν − 4)`` of t_ν (0 for ν = ∞, ``inf`` for ν ≤ 4)."""
    if math.isinf(nu):
        return 0.0
    return 6.0 / (nu - 4.0) if nu > 4.0 else math.inf
