"""Noise laws (THEORY.md §1, §3): sampling moments and quantiles, sign means, closed forms.

Statistical checks use fixed seeds and a 5-standard-error band from the CLT.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compsde import _special, noise
from compsde.noise import Gaussian, StudentT

Z_BAND = 5.0


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_within_se(estimate: torch.Tensor, truth: torch.Tensor, se: torch.Tensor) -> None:
    estimate, truth, se = (torch.as_tensor(v, dtype=torch.float64) for v in (estimate, truth, se))
    excess = (estimate - truth).abs() / se
    assert bool((excess <= Z_BAND).all()), f"max |est - truth|/se = {float(excess.max()):.2f}"


# -- sampling -------------------------------------------------------------------------------------
def test_gaussian_moments_per_agent_scales() -> None:
    law = noise.make("gaussian:scale=1/2/3")
    n, d = 100_000, 4
    z = law.sample((n, 3, d), gen(1))
    assert z.shape == (n, 3, d) and z.dtype == torch.float64
    sigma2 = torch.tensor([1.0, 4.0, 9.0])
    m = n * d
    flat = z.transpose(0, 1).reshape(3, -1)
    assert_within_se(flat.mean(1), torch.zeros(3), sigma2.sqrt() / math.sqrt(m))
    # Var of Z² is 2σ⁴ for a Gaussian.
    assert_within_se(flat.square().mean(1), sigma2, sigma2 * math.sqrt(2.0 / m))
    assert torch.equal(law.variance(3, d), sigma2[:, None].expand(3, d))


def test_student_t_variance_nu5() -> None:
    nu, sigma = 5.0, 2.0
    law = StudentT(nu, sigma)
    n = 1_000_000
    z = law.sample((n, 1, 1), gen(2)).view(-1)
    var = nu / (nu - 2) * sigma**2
    # Var(Z²) = E Z⁴ − (E Z²)², E T⁴ = 3ν²/((ν−2)(ν−4)).
    var_of_sq = sigma**4 * (3 * nu**2 / ((nu - 2) * (nu - 4)) - (nu / (nu - 2)) ** 2)
    assert_within_se(z.square().mean(), var, math.sqrt(var_of_sq / n))
    assert law.finite_variance
    assert torch.allclose(law.variance(2, 3), torch.full((2, 3), var, dtype=torch.float64))


@pytest.mark.parametrize("nu", [0.05, 0.5, 1.0, 1.5, 2.0, 7.0])
def test_student_t_quantiles(nu: float) -> None:
    """Empirical CDF at a few points against standard_cdf (heavy tails: no moments needed)."""
    scales = torch.tensor([0.5, 3.0])
    law = StudentT(nu, scales)
    n = 100_000
    z = law.sample((n, 2, 1), gen(3))
    assert bool(torch.isfinite(z).all())
    points = torch.tensor([-30.0, -2.0, -0.4, 0.0, 0.3, 1.0, 5.0, 100.0], dtype=torch.float64)
    for agent in range(2):
        column = z[:, agent, 0]
        empirical = (column[:, None] <= points).double().mean(0)
        truth = law.standard_cdf(points / scales[agent])
        se = (truth * (1 - truth) / n).sqrt()
        assert_within_se(empirical, truth, se)


@pytest.mark.parametrize("nu", [0.05, 0.5, 4.5])
def test_student_t_float32_sampling(nu: float) -> None:
    """float32 draws follow the law; |T| overflows to inf exactly when it exceeds float32's max."""
    law = StudentT(nu, 1.0)
    n = 200_000
    z = law.sample((n, 1, 1), gen(4), dtype=torch.float32).view(-1)
    assert z.dtype == torch.float32 and not bool(torch.isnan(z).any())
    for point in (-3.0, 0.5):
        p = float(law.standard_cdf(torch.tensor(point, dtype=torch.float64)))
        assert_within_se((z <= point).double().mean(), p, math.sqrt(p * (1 - p) / n))
    big = torch.tensor(-torch.finfo(torch.float32).max, dtype=torch.float64)
    p_inf = 2 * float(law.standard_cdf(big))              # P(|T| > max), ≈ 0.0106 at ν = 0.05
    se = max(math.sqrt(p_inf * (1 - p_inf) / n), 1e-12)
    assert_within_se(torch.isinf(z).double().mean(), p_inf, se)


def test_batch_divides_scale_by_sqrt_b() -> None:
    law = Gaussian(2.0)
    assert torch.allclose(law.scales(3, 2, batch=4), torch.ones(3, 2, dtype=torch.float64))
    assert torch.allclose(law.variance(3, 2, batch=4), torch.ones(3, 2, dtype=torch.float64))
    t = StudentT(4.0, 3.0)
    assert torch.allclose(t.scales(1, 1, batch=9), torch.ones(1, 1, dtype=torch.float64))
    assert torch.allclose(t.variance(1, 1, batch=9), torch.full((1, 1), 2.0, dtype=torch.float64))
    n = 400_000
    z = law.sample((n, 1, 1), gen(5), batch=16)        # σ/√B = 0.5
    assert_within_se(z.square().mean(), 0.25, 0.25 * math.sqrt(2.0 / n))


def test_scale_shapes() -> None:
    per_coord = Gaussian([1.0, 2.0, 3.0])               # length d (≠ agents): per coordinate
    assert torch.equal(per_coord.scales(2, 3), torch.tensor([[1.0, 2, 3], [1, 2, 3]]).double())
    per_agent = Gaussian(torch.tensor([1.0, 2.0]))      # length agents: per agent
    assert torch.equal(per_agent.scales(2, 3), torch.tensor([[1.0] * 3, [2.0] * 3]).double())
    forced = Gaussian(torch.tensor([[1.0, 2.0]]))       # (1, d) with agents == d: per coordinate
    assert torch.equal(forced.scales(2, 2), torch.tensor([[1.0, 2], [1, 2]]).double())
    full = torch.rand(3, 4, dtype=torch.float64, generator=gen(6)) + 0.1
    assert torch.equal(Gaussian(full).scales(3, 4), full)
    s = Gaussian(1.0).scales(2, 3, dtype=torch.float32)
    assert s.dtype == torch.float32 and s.shape == (2, 3)


def test_per_coordinate_sampling() -> None:
    law = Gaussian(torch.tensor([[1.0, 10.0]]))
    z = law.sample((50_000, 3, 2), gen(7))
    std = z.reshape(-1, 2).std(0)
    sigma = torch.tensor([1.0, 10.0])
    assert_within_se(std, sigma, sigma / math.sqrt(2 * 150_000))


def test_reproducible_with_seeded_generator() -> None:
    for law in (Gaussian(1.0), StudentT(1.0), StudentT(0.7), StudentT(4.5, [1.0, 2.0])):
        a = law.sample((4, 2, 3), gen(11))
        b = law.sample((4, 2, 3), gen(11))
        c = law.sample((4, 2, 3), gen(12))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_leading_dims_and_dtype() -> None:
    for law in (Gaussian(1.0), StudentT(3.0), StudentT(1.0), StudentT(0.3)):
        z = law.sample((2, 5, 4, 3), gen(0), dtype=torch.float32)
        assert z.shape == (2, 5, 4, 3) and z.dtype == torch.float32


# -- sign means -----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["gaussian:scale=1/2", "student-t:nu=0.5,scale=1/2",
                                  "student-t:nu=1,scale=1/2", "student-t:nu=2,scale=1/2",
                                  "student-t:nu=3,scale=1/2", "student-t:nu=4.5,scale=1/2"])
def test_sign_mean_matches_monte_carlo(spec: str) -> None:
    law = noise.make(spec)
    grad = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5], dtype=torch.float64)
    n, batch = 100_000, 4
    z = law.sample((n, 2, 5), gen(8), batch)
    empirical = torch.sign(grad + z).mean(0)
    exact = law.sign_mean(grad, 2, batch)
    assert exact.shape == (2, 5)
    se = ((1 - exact.square()) / n).sqrt().clamp_min(1e-12)
    assert_within_se(empirical, exact, se)


def test_sign_mean_batched_shapes_and_dtype() -> None:
    law = StudentT(4.5, [1.0, 2.0, 3.0])
    grad = torch.randn(7, 5, 4, generator=gen(9), dtype=torch.float32)
    m = law.sign_mean(grad, 3)
    assert m.shape == (7, 5, 3, 4) and m.dtype == torch.float32
    ref = law.sign_mean(grad.double(), 3)
    assert torch.allclose(m.double(), ref, atol=1e-6)
    assert torch.allclose(ref[..., 1, :], _special.t_sign_mean(grad.double() / 2.0, 4.5))


def test_gaussian_closed_forms_match_scipy() -> None:
    y = np.linspace(-40, 40, 2001)
    law = Gaussian(1.0)
    yt = torch.from_numpy(y)
    assert np.allclose(law.sign_mean(yt[:, None], 1)[:, 0, 0].numpy(), sp.erf(y / np.sqrt(2)),
                       atol=1e-15)
    cdf, ref = law.standard_cdf(yt).numpy(), sp.ndtr(y)
    assert np.abs(cdf - ref).max() <= 1e-15
    normal = ref > 1e-300                               # relative accuracy down the left tail
    assert (np.abs(cdf - ref)[normal] / ref[normal]).max() <= 1e-11


def _log_grid() -> np.ndarray:
    mag = np.concatenate([[0.0], np.logspace(-300, -6, 60), np.logspace(-6, 6, 600)])
    return np.concatenate([-mag[::-1], mag])


@pytest.mark.parametrize("nu", [2.0, 3.0])
def test_t_closed_forms_match_scipy(nu: float) -> None:
    y = _log_grid()
    ours = _special.t_sign_mean(torch.from_numpy(y), nu).numpy()
    assert np.abs(ours - (2 * sp.stdtr(nu, y) - 1)).max() <= 1e-14


def test_cauchy_closed_form() -> None:
    """ν = 1 is ``(2/π) arctan y``, checked against numpy's arctan: scipy's stdtr(1, y) itself is
    off by up to 3e-9 for 1e-12 < |y| < 1e-5 (found against mpmath at 40 digits)."""
    y = _log_grid()
    ours = _special.t_sign_mean(torch.from_numpy(y), 1.0).numpy()
    assert np.abs(ours - 2 / np.pi * np.arctan(y)).max() <= 1e-15
    cdf = StudentT(1.0).standard_cdf(torch.from_numpy(y)).numpy()
    assert np.abs(cdf - (0.5 + np.arctan(y) / np.pi)).max() <= 1e-15


@pytest.mark.parametrize("nu", [0.05, 0.1, 0.5, 0.999, 1.5, 2.5, 4.5, 10.0, 37.3, 200.0])
def test_incomplete_beta_grid_matches_scipy(nu: float) -> None:
    y = _log_grid()
    ours = StudentT(nu).sign_mean(torch.from_numpy(y)[:, None], 1)[:, 0, 0].numpy()
    assert np.abs(ours - (2 * sp.stdtr(nu, y) - 1)).max() <= 1e-12
    cdf = StudentT(nu).standard_cdf(torch.from_numpy(y)).numpy()
    ref = sp.stdtr(nu, y)
    assert np.abs(cdf - ref).max() <= 1e-12
    tail = ref > 1e-300                                  # the left tail is relatively accurate
    assert (np.abs(cdf - ref)[tail] / ref[tail]).max() <= 1e-11


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(nu=st.floats(0.05, 200.0),
       ys=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40))
def test_t_sign_mean_property_matches_scipy(nu: float, ys: list[float]) -> None:
    y = np.array(ys, dtype=np.float64)
    ours = _special.t_sign_mean(torch.from_numpy(y), nu).numpy()
    ref = 2 / np.pi * np.arctan(y) if nu == 1.0 else 2 * sp.stdtr(nu, y) - 1
    assert np.abs(ours - ref).max() <= 1e-10
    cdf = _special.t_cdf(torch.from_numpy(y), nu).numpy()
    ref_cdf = 0.5 + np.arctan(y) / np.pi if nu == 1.0 else sp.stdtr(nu, y)
    assert np.abs(cdf - ref_cdf).max() <= 1e-10


def test_special_values_and_float32() -> None:
    inf = float("inf")
    y = torch.tensor([-inf, -1e300, 0.0, 1e300, inf, float("nan")], dtype=torch.float64)
    for nu in (0.3, 1.0, 2.0, 3.0, 4.5):
        m = _special.t_sign_mean(y, nu)
        assert m[:5].tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0] and bool(m[5].isnan())
        c = _special.t_cdf(y, nu)
        assert c[[0, 2, 3, 4]].tolist() == [0.0, 0.5, 1.0, 1.0] and 0 <= float(c[1]) < 1e-299
    y32 = torch.linspace(-50, 50, 1001)
    for nu in (0.5, 4.5, 60.0):
        ref = 2 * sp.stdtr(nu, y32.double().numpy()) - 1
        assert np.abs(_special.t_sign_mean(y32, nu).double().numpy() - ref).max() <= 1e-5


def test_phase3_constants() -> None:
    """ℓ = 2f(0): THEORY.md §3 values, scipy's density, and ν → ∞ tends to the Gaussian √(2/π)."""
    for nu, ell in [(1.0, 0.63662), (2.0, 0.70711), (3.0, 0.73511)]:
        assert abs(2 * StudentT(nu).standard_density_at_zero() - ell) <= 5e-6
    assert abs(2 * Gaussian().standard_density_at_zero() - 0.79788) <= 5e-6
    for nu in (0.05, 0.5, 4.5, 200.0):
        pdf0 = math.exp(sp.gammaln((nu + 1) / 2) - sp.gammaln(nu / 2)) / math.sqrt(math.pi * nu)
        assert math.isclose(StudentT(nu).standard_density_at_zero(), pdf0, rel_tol=1e-12)
    assert math.isclose(2 * StudentT(1e9).standard_density_at_zero(), math.sqrt(2 / math.pi),
                        rel_tol=1e-8)


# -- specs and validation -------------------------------------------------------------------------
def test_make_and_spec_round_trip() -> None:
    law = noise.make("gaussian")
    assert isinstance(law, Gaussian) and law.spec == "gaussian:scale=1" and law.name == "gaussian"
    t = noise.make("student-t:nu=1,scale=2")
    assert isinstance(t, StudentT) and t.nu == 1.0 and not t.finite_variance
    assert t.spec == "student-t:nu=1,scale=2" and t.name == "student-t"
    agents = noise.make("gaussian:scale=1/2/3/4")
    assert torch.equal(agents.scales(4, 2)[:, 0], torch.tensor([1.0, 2, 3, 4]).double())
    for spec in ("gaussian:scale=0.5", "student-t:nu=2.5,scale=1/3", "gaussian:scale=1/2/3/4"):
        assert noise.make(noise.make(spec).spec).spec == noise.make(spec).spec
    assert noise.make("student-t:nu=3").finite_variance


def test_with_scale_is_a_fresh_law_and_sign_mean_leaves_input() -> None:
    law = noise.make("student-t:nu=3,scale=1/2")
    law.scales(2, 3)  # fills the law's cache of scale rows
    own = law.with_scale(2.0)
    assert own.spec == "student-t:nu=3,scale=2" and law.spec == "student-t:nu=3,scale=1/2"
    assert torch.equal(own.scales(1, 3), torch.full((1, 3), 2.0, dtype=torch.float64))
    assert torch.equal(law.scales(2, 1)[:, 0], torch.tensor([1.0, 2.0], dtype=torch.float64))
    y = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    closed = {"gaussian": torch.erf(y / math.sqrt(2)), "student-t:nu=1": 2 / math.pi * y.atan()}
    for spec, expected in closed.items():
        torch.testing.assert_close(noise.make(spec).standard_sign_mean(y), expected)
        assert torch.equal(y, torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize(("spec", "word"), [
    ("student-t:nu=0", "nu"), ("student-t:nu=-1", "nu"), ("student-t:nu=abc", "nu"),
    ("student-t:nu=nan", "nu"), ("student-t", "nu"), ("gaussian:scale=0", "scale"),
    ("gaussian:scale=-1", "scale"), ("gaussian:scale=inf", "scale"),
    ("gaussian:scale=nan", "scale"), ("gaussian:scale=1/x", "scale"),
    ("laplace:scale=1", "gaussian"), ("gaussian:scale", "malformed"), ("", "noise"),
    ("gaussian:nu=3", "nu"), ("student-t:nu=1,df=2", "df"), ("gaussian:scale=1,scale=2", "repeats"),
])
def test_bad_specs(spec: str, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        noise.make(spec)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scale"):
        Gaussian([1.0, 2.0, 3.0, 4.0]).scales(3, 5)      # 4 scales, 3 agents, d = 5
    with pytest.raises(ValueError, match=r"agents=3.*d=5"):
        Gaussian([1.0, 2.0, 3.0, 4.0]).sample((2, 3, 5), gen())
    with pytest.raises(ValueError, match="scale"):
        Gaussian(torch.ones(2, 3)).scales(3, 3)
    for bad in (0.0, -1.0, float("nan"), float("inf"), [1.0, 0.0], [], "a", torch.ones(2, 2, 2)):
        with pytest.raises(ValueError, match="scale"):
            Gaussian(bad)
    for bad_nu in (0.0, -2.0, float("inf")):
        with pytest.raises(ValueError, match="nu"):
            StudentT(bad_nu)
    for nu in (0.5, 1.0, 2.0):
        with pytest.raises(ValueError, match="does not exist"):
            StudentT(nu).variance(2, 2)
    with pytest.raises(ValueError, match="shape"):
        Gaussian().sample((5,), gen())
    with pytest.raises(ValueError, match="batch"):
        Gaussian().scales(2, 2, batch=0)
    with pytest.raises(ValueError, match="agents"):
        Gaussian().sign_mean(torch.zeros(3), 0)
    with pytest.raises(ValueError, match="grad"):
        Gaussian().sign_mean(torch.tensor(1.0), 1)


# -- how a batch is drawn (THEORY.md §1a) ----------------------------------------------------
@pytest.mark.parametrize("batch", [4, 16])
def test_gaussian_batch_mean_has_the_variance_of_the_convention(batch):
    """The mean of B N(0, σ²) draws has variance σ²/B: the σ/√B convention, drawn B times."""
    law = Gaussian([1.0, 3.0])
    z = law.sample((20_000, 2, 3), gen(1), batch, batch_noise="mean")
    var = z.var(dim=0)
    truth = torch.tensor([1.0, 9.0])[:, None].expand(2, 3) / batch
    assert_within_se(var, truth, truth * math.sqrt(2 / 20_000))


def test_batch_mean_draws_batch_times_as_many_unit_draws():
    """Same generator state: the mean of B draws is (Σ of the first B unit draws)·σ/B."""
    law = Gaussian(2.0)
    z = law.sample((5, 1, 2), gen(3), 4, batch_noise="mean")
    g = gen(3)
    unit = [torch.randn((5, 1, 2), generator=g, dtype=torch.float64) for _ in range(4)]
    assert torch.allclose(z, 2.0 * torch.stack(unit).mean(dim=0))


def test_cauchy_batch_mean_keeps_the_per_sample_scale():
    """The mean of B Cauchy(σ) draws is Cauchy(σ), not Cauchy(σ/√B): median |Z| = σ."""
    law = StudentT(1.0, 2.0)
    runs = 40_000
    z = law.sample((runs, 1, 1), gen(2), 16, batch_noise="mean").ravel()
    scaled = law.sample((runs, 1, 1), gen(2), 16).ravel()
    # se of the median of |Z| (density of |Z| at its median σ is 1/(πσ)): πσ/(2√R)
    se = math.pi * 2.0 / (2 * math.sqrt(runs))
    assert abs(float(z.abs().median()) - 2.0) <= Z_BAND * se
    assert abs(float(scaled.abs().median()) - 0.5) <= Z_BAND * se / 4


def test_batch_noise_is_checked():
    with pytest.raises(ValueError, match="batch_noise must be one of scale, mean"):
        Gaussian(1.0).sample((2, 1, 1), gen(), 2, batch_noise="sum")
    with pytest.raises(ValueError, match="batch_noise"):
        noise.check_batch_noise("Mean")


def test_batch_mean_law_is_the_convention_for_gaussian_and_the_same_scale_for_cauchy():
    assert torch.allclose(Gaussian(2.0).batch_mean_law(16).scale, torch.tensor(0.5,
                                                                                dtype=torch.float64))
    assert float(StudentT(1.0, 2.0).batch_mean_law(16).scale) == 2.0
    with pytest.raises(ValueError, match="not a Student-t law"):
        StudentT(1.5, 1.0).batch_mean_law(4)
