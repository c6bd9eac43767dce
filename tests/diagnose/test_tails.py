"""Tail estimators recover ν and the scale of Student-t noise and α of α-stable noise.

Tolerances (fixed seeds, never tuned):

- ν̂ (Student-t fit): ``|ν̂ − ν| ≤ 5 se``, se from the curvature of the profile likelihood
  (observed information). The split-panel jackknife removes the O(1/M) incidental-parameter
  bias; a 16-repetition check at M = 64, 1000 columns (ν fitted on 500; ν = 1, 3, 6) gave
  z-scores with mean within 0.35 and spread 0.95–1.3 se, which 5 se covers.
- scale: ``|mean_j log σ̂_j − log σ| ≤ 5 · log_scale_se`` (independent Fisher part plus the
  common shift through ν̂, see ``StudentTFit``).
- Gaussian: ``ξ̂ = 1/ν̂ ≤ 5 se(ξ̂)`` (ξ = 0 is the truth).
- Hill: ``|α̂ − α| ≤ 5 α̂/√k`` where its second-order bias is negligible at k = √n:
  Cauchy (ρ = −2) and symmetric α-stable (ρ = −α), bias ∝ (k/n)^{|ρ|} ≤ n^{-0.75}.
"""

from __future__ import annotations

import math

import pytest
import torch

from compsde import noise
from compsde.diagnose import fit_student_t, hill, nu_from_kurtosis
from compsde.diagnose.tails import t_excess_kurtosis

M, COLUMNS = 64, 600


def stable(shape: tuple[int, ...], alpha: float, generator: torch.Generator) -> torch.Tensor:
    """Symmetric α-stable draws by Chambers–Mallows–Stuck (β = 0, unit scale)."""
    v = (torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5) * math.pi
    w = -torch.rand(shape, generator=generator, dtype=torch.float64).log()
    return (torch.sin(alpha * v) / torch.cos(v) ** (1 / alpha)
            * (torch.cos(v - alpha * v) / w) ** ((1 - alpha) / alpha))


@pytest.mark.parametrize("nu", [1.0, 3.0])
def test_student_t_fit_recovers_nu_and_scale(nu, generator):
    law = noise.make(f"student-t:nu={nu},scale=0.5")
    x = 1.0 + law.sample((M, COLUMNS), generator)
    fit = fit_student_t(x, generator=generator)
    assert fit.nu_se is not None
    assert abs(fit.nu - nu) <= 5 * fit.nu_se, (fit.nu, fit.nu_se)
    assert fit.nu_interval[0] < fit.nu < fit.nu_interval[1]
    assert abs(float(fit.scale.log().mean()) - math.log(0.5)) <= 5 * fit.log_scale_se
    # locations: per-coordinate se of the t location ≈ σ√((ν+3)/((ν+1)M)); mean over columns
    loc_se = 0.5 * math.sqrt((nu + 3) / ((nu + 1) * M)) / math.sqrt(COLUMNS)
    assert abs(float(fit.loc.mean()) - 1.0) <= 5 * loc_se
    assert fit.finite_variance == (nu > 2)


def test_gaussian_noise_reads_as_gaussian(generator):
    x = -2.0 + 3.0 * torch.randn(M, COLUMNS, generator=generator, dtype=torch.float64)
    fit = fit_student_t(x, generator=generator)
    if math.isfinite(fit.nu):
        assert fit.xi <= 5 * fit.xi_se
    assert math.isinf(fit.nu_interval[1])
    assert abs(float(fit.scale.log().mean()) - math.log(3.0)) <= 5 * fit.log_scale_se


def test_degenerate_columns_are_left_out(generator):
    x = noise.make("student-t:nu=2,scale=1").sample((M, 300), generator)
    x[:, :10] = 0.25                    # e.g. a dead unit: no noise at all
    fit = fit_student_t(x, generator=generator)
    assert fit.degenerate[:10].all() and not fit.degenerate[10:].any()
    assert (fit.scale[:10] == 0).all() and (fit.loc[:10] == 0.25).all()
    with pytest.raises(ValueError, match="no column with spread"):
        fit_student_t(torch.ones(M, 4))
    with pytest.raises(ValueError, match=">= 8"):
        fit_student_t(torch.randn(4, 10, generator=generator))  # rows: mini-batches


def test_hill_recovers_cauchy_and_stable_tail_index(generator):
    cauchy = noise.make("student-t:nu=1,scale=2").sample((M, COLUMNS), generator)
    est = hill(cauchy / 2)
    assert est.k == math.isqrt(est.n)
    assert abs(est.alpha - 1.0) <= 5 * est.se
    alpha = 1.5
    est = hill(stable((M, COLUMNS), alpha, generator))
    assert abs(est.alpha - alpha) <= 5 * est.se, est


def test_kurtosis_moment_relation():
    for nu in (5.0, 8.0, 30.0):
        assert nu_from_kurtosis(t_excess_kurtosis(nu)) == pytest.approx(nu)
    assert math.isinf(nu_from_kurtosis(-0.1))
    assert math.isinf(t_excess_kurtosis(3.0))
    assert t_excess_kurtosis(math.inf) == 0.0


def test_columns_with_a_point_mass_in_a_half_sample_keep_every_scale_finite(generator):
    """A small mini-batch makes many gradient coordinates exactly 0 in many mini-batches (ReLU
    units, blank pixels); where the zeros fill most of one half sample, that half's EM collapses
    onto them (σ̂ → 0). The jackknife's mean log σ̂ leaves such columns out instead of turning
    every scale into NaN, so the fit stays usable and ν̂ is still that of the t draws."""
    x = noise.make("student-t:nu=3,scale=1").sample((M, COLUMNS), generator)
    x[: M // 2 - 6, :50] = 0.0                  # 26 of 64 zeros: 81 % of the first half
    fit = fit_student_t(x, generator=generator)
    live = ~fit.degenerate
    assert bool(torch.isfinite(fit.scale).all()) and bool((fit.scale[live] > 0).all())
    assert math.isfinite(fit.log_scale_se)
    z = (x[:, live] - fit.loc[live]) / fit.scale[live]
    assert hill(z).n == z.numel()               # every standardised value is finite
    assert abs(fit.nu - 3.0) <= 5 * fit.nu_se, (fit.nu, fit.nu_se)
