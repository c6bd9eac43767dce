"""The measured batch law (scale ∝ B^{−γ}, THEORY.md §5a) and the rules that take γ.

Tolerances: the laws with an exact exponent at every B (Gaussian ½, Cauchy 0) must be within
4 se of it; the se itself is checked against the spread of 40 independent fits (the fit
treats nested levels as independent, so its se may be larger than the spread, never much
smaller: spread ≤ 1.3 × mean se, the 1.3 covering the sampling error of a 40-fit sd, ≈ 11 %).
"""

from __future__ import annotations

import math

import pytest
import torch

from compsde.diagnose.batch_law import (
    GAMMA_FLOOR,
    batch_factor,
    fit_batch_law,
    samples_needed,
)
from compsde.noise import make as make_noise
from compsde.scaling.rules import dcsgd_from_dsgd, dsignsgd_rules, noise_compensation


def draws(spec: str, rows: int, cols: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return make_noise(spec).sample((rows, cols), gen)


@pytest.mark.parametrize(("spec", "gamma"), [("gaussian:scale=2", 0.5),
                                             ("student-t:nu=1,scale=1", 0.0)])
def test_exact_laws_are_recovered(spec, gamma):
    law = fit_batch_law(draws(spec, 64, 2000, 1) + 3.0, batch=8)   # a location is removed
    assert law.batches == (8, 32, 128)
    assert law.pairs == (32, 8, 2)
    assert abs(law.gamma - gamma) <= 4 * law.se, law


def test_heavy_tails_fall_slower_than_the_square_root():
    law = fit_batch_law(draws("student-t:nu=1.5,scale=1", 64, 4000, 2))
    assert law.gamma + 4 * law.se < 0.5
    assert law.alpha is not None and law.alpha < 2


def test_standard_error_covers_the_spread_of_fits():
    fits = [fit_batch_law(draws("gaussian:scale=1", 64, 300, seed)) for seed in range(40)]
    gammas = torch.tensor([f.gamma for f in fits])
    mean_se = sum(f.se for f in fits) / len(fits)
    assert float(gammas.std()) <= 1.3 * mean_se
    assert abs(float(gammas.mean()) - 0.5) <= 4 * mean_se / math.sqrt(len(fits)) + 0.01


def test_alpha_is_not_given_for_light_tails():
    light = fit_batch_law(draws("gaussian:scale=1", 64, 2000, 3))
    assert light.alpha is None and "γ̂ only" in light.alpha_note
    import dataclasses
    told = dataclasses.replace(fit_batch_law(draws("student-t:nu=1.5,scale=1", 64, 4000, 2)),
                               finite_variance=True)
    assert told.alpha is None and "finite" in told.alpha_note


def test_too_few_samples_say_what_is_needed():
    assert samples_needed() == 64
    with pytest.raises(ValueError, match=r"samples must be at least 64 .*got 32"):
        fit_batch_law(torch.randn(32, 10))
    with pytest.raises(ValueError, match="point masses"):
        fit_batch_law(torch.zeros(64, 5))


def test_batch_factor_and_the_floor():
    assert batch_factor(3.0, 0.5) == pytest.approx(3.0)
    assert batch_factor(3.0, 0.25) == pytest.approx(9.0)
    assert batch_factor(3.0, 0.25, power=1) == pytest.approx(3.0**4)
    assert batch_factor(3.0, GAMMA_FLOOR) is None


def test_rules_reduce_to_the_gaussian_ones_at_one_half():
    for via in ("batch", "agents", "lr"):
        half = dcsgd_from_dsgd(0.1, 32, 8, 9, via=via, L=2.0)
        near = dcsgd_from_dsgd(0.1, 32, 8, 9, via=via, L=2.0, gamma=0.5 - 1e-9)
        for a, b in ((half.config.lr, near.config.lr), (half.config.batch, near.config.batch),
                     (half.config.agents, near.config.agents)):
            assert a == pytest.approx(b, rel=1e-6)
    assert dsignsgd_rules(0.1, 64, 4, 2.0, "K").config.batch == 16
    assert noise_compensation(4, 2) == 16


def test_rules_with_gamma():
    f, corr = 10.0, 0.1 * 2.0 * 9 / (2 * 8)
    rule = dcsgd_from_dsgd(0.1, 32, 8, 9, via="batch", L=2.0, gamma=0.25)
    assert rule.config.batch == pytest.approx(32 * (f / (1 - corr)) ** 2)
    agents = dcsgd_from_dsgd(0.1, 32, 8, 9, via="agents", L=2.0, gamma=0.25).config.agents
    lhs = f * agents ** -0.5 / (1 - 0.1 * 2.0 * 9 / (2 * agents))
    assert lhs == pytest.approx(8 ** -0.5, rel=1e-9)
    assert dsignsgd_rules(0.1, 64, 4, 2.0, "K", gamma=0.25).config.batch == pytest.approx(4)
    assert noise_compensation(4, 2, gamma=0.25) == pytest.approx(64)
    # the lr rule has no γ; a flat law refuses every batch or agents rule
    assert dcsgd_from_dsgd(0.1, 32, 8, 9, via="lr", L=2.0, gamma=0.0).config.lr == \
        pytest.approx(dcsgd_from_dsgd(0.1, 32, 8, 9, via="lr", L=2.0).config.lr)
    for call in (lambda: dcsgd_from_dsgd(0.1, 32, 8, 9, via="batch", L=2.0, gamma=0.01),
                 lambda: noise_compensation(4, 2, gamma=0.0),
                 lambda: dsignsgd_rules(0.1, 64, 4, 2.0, "K", gamma=0.02)):
        with pytest.raises(ValueError, match=r"gamma must be > 0\.05.*no batch recovers"):
            call()
