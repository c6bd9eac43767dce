"""The known-wrong pieces the suite patches in (each a function of the original)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

from compsde.compressors.sparse import RandK
from compsde.methods import DSignSGD
from compsde.noise import StudentT
from compsde.scaling import rules
from compsde.sde.models import SDEModel
from compsde.theory import bounds, stationary
from compsde.theory.bounds import PhaseBound
from compsde.theory.model import QuadraticModel


def mutate(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str,
           wrong: Callable[[Any], Any]) -> None:
    """Replace ``owner.name`` by ``wrong(original)`` — on ``owner`` and on every loaded compsde
    module that imported the same object by name, so no alias keeps the real piece."""
    original = getattr(owner, name)
    replacement = wrong(original)
    monkeypatch.setattr(owner, name, replacement)
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("compsde") and module is not owner:
            for attr, value in list(vars(module).items()):
                if value is original:
                    monkeypatch.setattr(module, attr, replacement)


def omega_doubled_in_theory(monkeypatch: Any) -> None:
    """The closed forms see 2ω (every QuadraticModel built from a problem has its ω_i doubled)."""

    def wrong(original: Any) -> Any:
        def from_problem(*args: Any, **kwargs: Any) -> QuadraticModel:
            model = original(*args, **kwargs)
            return model.replace(omegas=2 * model.omegas)

        return staticmethod(from_problem)

    mutate(monkeypatch, QuadraticModel, "from_problem", wrong)


def phase_bound_tripled(monkeypatch: Any) -> None:
    """DSignSGD's phase bound three times too loose."""

    def wrong(original: Any) -> Any:
        def bound(model: QuadraticModel, steps: Any) -> PhaseBound:
            b = original(model, steps)
            return dataclasses.replace(b, bound=3 * b.bound, phase1=3 * b.phase1,
                                       phase3=3 * b.phase3, level3=3 * b.level3)

        return bound

    mutate(monkeypatch, bounds, "dsignsgd_phase_bound", wrong)


def phase3_prediction_doubled(monkeypatch: Any) -> None:
    """The Phase-3 stationary loss of DSignSGD (the SDE value) doubled."""

    def wrong(original: Any) -> Any:
        def stationary_loss(model: QuadraticModel, kind: str = "discrete") -> float:
            value = original(model, kind)
            return 2 * value if kind == "sde" and model.method == "dsignsgd" else value

        return stationary_loss

    mutate(monkeypatch, stationary, "stationary_loss", wrong)


def diffusion_scaled(monkeypatch: Any, factor: float) -> None:
    """The SDE's diffusion multiplied by ``factor`` (its covariance by factor²)."""
    mutate(monkeypatch, SDEModel, "noise_scale",
           lambda original: lambda self, lr: factor**2 * original(self, lr))


def drift_halved(monkeypatch: Any) -> None:
    """The SDE's drift halved (the model moves at half the algorithm's speed)."""

    def wrong(original: Any) -> Any:
        def evaluate(self: SDEModel, x: torch.Tensor, lr: float) -> Any:
            drift, cov = original(self, x, lr)
            return 0.5 * drift, cov

        return evaluate

    mutate(monkeypatch, SDEModel, "evaluate", wrong)


def randk_returns_input(monkeypatch: Any) -> None:
    """Rand-k sends its input unchanged: no compression at all."""
    mutate(monkeypatch, RandK, "_compress", lambda original: lambda self, x, gen: x.clone())


def student_t_draws_gaussian(monkeypatch: Any) -> None:
    """The Student-t law samples standard Gaussians."""

    def wrong(original: Any) -> Any:
        def standard(self: StudentT, shape: tuple[int, ...], generator: torch.Generator,
                     dtype: torch.dtype, device: Any) -> torch.Tensor:
            return torch.randn(shape, generator=generator, dtype=dtype, device=device)

        return standard

    mutate(monkeypatch, StudentT, "_standard", wrong)


def sign_compression_off(monkeypatch: Any) -> None:
    """DSignSGD averages the raw gradients (it becomes DSGD)."""
    mutate(monkeypatch, DSignSGD, "direction",
           lambda original: lambda self, grads, generator=None: grads.mean(dim=-2))


def dcsgd_rule_ignores_omega(monkeypatch: Any) -> None:
    """The DCSGD scaling rule forgets the 1 + ω factor (it returns DSGD's own batch/agents)."""

    def wrong(original: Any) -> Any:
        def rule(lr: float, batch: float, agents: float, omega: float, **kwargs: Any) -> Any:
            return original(lr, batch, agents, 0.0, **kwargs)

        return rule

    mutate(monkeypatch, rules, "dcsgd_from_dsgd", wrong)


def dsignsgd_rule_keeps_agents(monkeypatch: Any) -> None:
    """The DSignSGD scaling rule scales η (and B) but leaves the number of agents N unchanged."""

    def wrong(original: Any) -> Any:
        def rule(lr: float, batch: float, agents: float, kappa: float,
                 convention: str = "T") -> Any:
            right = original(lr, batch, agents, kappa, convention)
            return dataclasses.replace(right, config=dataclasses.replace(right.config,
                                                                         agents=agents))

        return rule

    mutate(monkeypatch, rules, "dsignsgd_rules", wrong)


def batch_scale_over_b(monkeypatch: Any) -> None:
    """The batch convention divides the noise scale by B instead of √B (σ → σ/B)."""
    from compsde.noise import NoiseLaw

    def wrong(original: Any) -> Any:
        def cached(self: NoiseLaw, kind: str, agents: int, d: int, batch: int, *rest: Any) -> Any:
            return original(self, kind, agents, d, batch * batch, *rest)

        return cached

    mutate(monkeypatch, NoiseLaw, "_cached", wrong)


def solver_level_without_one_plus_omega(monkeypatch: Any) -> None:
    """The solver's DCSGD level forgets the (1 + ω) factor (it recommends DSGD's knobs)."""
    from compsde.scaling import solver

    def wrong(original: Any) -> Any:
        def level(setup: Any, **kwargs: Any) -> float:
            return original(dataclasses.replace(setup, omega=0.0), **kwargs)

        return level

    mutate(monkeypatch, solver, "level", wrong)


def solver_level_with_one_plus_omega_squared(monkeypatch: Any) -> None:
    """The solver's DCSGD level carries (1 + ω)² instead of (1 + ω) (it over-compensates)."""
    from compsde.scaling import solver

    def wrong(original: Any) -> Any:
        def level(setup: Any, **kwargs: Any) -> float:
            value = original(setup, **kwargs)
            return value if setup.method == "dsignsgd" else value * (1 + setup.omega)

        return level

    mutate(monkeypatch, solver, "level", wrong)


def solver_level_without_rho(monkeypatch: Any) -> None:
    """The solver's DCSGD level drops ρ = 1 − ηLω/(2N) (the leading-order level only)."""
    from compsde.scaling import solver

    def wrong(original: Any) -> Any:
        def level(setup: Any, **kwargs: Any) -> float:
            if setup.method == "dsignsgd":
                return original(setup, **kwargs)
            plain = original(dataclasses.replace(setup, omega=0.0), **kwargs)
            return plain * (1 + setup.omega)

        return level

    mutate(monkeypatch, solver, "level", wrong)


def sign_diffusion_without_m2(monkeypatch: Any) -> None:
    """DSignSGD's diffusion forgets its −m² term: S = I instead of Diag(1 − mean_i m_i²)."""
    from compsde.sde.diffusion import DiagonalCov
    from compsde.sde.moments import DSignSGDMoments

    def wrong(original: Any) -> Any:
        def evaluate(self: DSignSGDMoments, x: torch.Tensor) -> Any:
            drift, _ = original(self, x)
            return drift, DiagonalCov(torch.ones_like(drift))

        return evaluate

    mutate(monkeypatch, DSignSGDMoments, "evaluate", wrong)


def dcsgd_sde_without_gradient_part(monkeypatch: Any) -> None:
    """DCSGD's SDE keeps only the noise part (1+ω)σ²/N of its covariance: no ω(∂f)² term."""
    from compsde.sde.diffusion import DiagonalCov
    from compsde.sde.moments import DCSGDMoments

    def wrong(original: Any) -> Any:
        def evaluate(self: DCSGDMoments, x: torch.Tensor) -> Any:
            sigma2 = self._sigma2(x)
            factor = (1.0 + self.alpha + self.c).to(x.dtype).to(x.device)
            diag = (sigma2 * factor[:, None]).mean(0).expand_as(x).clone()
            return -self.problem.landscape.grad(x), DiagonalCov(diag)

        return evaluate

    mutate(monkeypatch, DCSGDMoments, "evaluate", wrong)


def dcsgd_sde_with_half_its_gradient_part(monkeypatch: Any) -> None:
    """DCSGD's SDE keeps half of its gradient part: ω(∂f)²/2 (e.g. ω/N² at N = 2)."""
    from compsde.sde.diffusion import DiagonalCov, DiagRankOneCov
    from compsde.sde.moments import DCSGDMoments

    def wrong(original: Any) -> Any:
        def evaluate(self: DCSGDMoments, x: torch.Tensor) -> Any:
            drift, cov = original(self, x)
            sigma2 = self._sigma2(x)
            factor = (1.0 + self.alpha + self.c).to(x.dtype).to(x.device)
            noise = (sigma2 * factor[:, None]).mean(0).expand_as(x)
            halved = noise + 0.5 * (cov.diag - noise)
            if isinstance(cov, DiagRankOneCov):      # Rand-k's rank-one part kept as it is
                return drift, DiagRankOneCov(halved, cov.c.squeeze(-1) if cov.c.ndim else cov.c,
                                             cov.v)
            return drift, DiagonalCov(halved)

        return evaluate

    mutate(monkeypatch, DCSGDMoments, "evaluate", wrong)


def randk_agents_share_one_subset(monkeypatch: Any) -> None:
    """Rand-k draws one coordinate subset per run that every agent uses (no independence)."""

    def wrong(original: Any) -> Any:
        def compress(self: RandK, x: torch.Tensor, gen: Any) -> torch.Tensor:
            if x.dim() < 2:
                return original(self, x, gen)
            d, agents = x.shape[-1], x.shape[-2]
            outer = x.numel() // (d * agents)
            index = self.indices(d, gen, rows=outer, device=x.device)      # (outer, k)
            index = index.unsqueeze(1).expand(outer, agents, index.shape[-1])
            flat = x.reshape(outer, agents, d)
            out = torch.zeros_like(flat)
            out.scatter_(2, index, flat.gather(2, index) * self.scale(d))
            return out.view(x.shape)

        return compress

    mutate(monkeypatch, RandK, "_compress", wrong)


def drawn_bound_doubled(monkeypatch: Any) -> None:
    """DSignSGD's drawn bound curve twice too loose, its closed-form level3 unchanged."""

    def wrong(original: Any) -> Any:
        def bound(model: QuadraticModel, steps: Any) -> PhaseBound:
            b = original(model, steps)
            return dataclasses.replace(b, bound=2 * b.bound)

        return bound

    mutate(monkeypatch, bounds, "dsignsgd_phase_bound", wrong)


def ell_always_gaussian(monkeypatch: Any) -> None:
    """ℓ_ν replaced by its Gaussian value √(2/π) for every ν (20 % too high at ν = 1)."""
    from compsde.theory import _laws

    mutate(monkeypatch, _laws, "ell", lambda original: lambda nu=None: original(None))


def arithmetic_means_of_unequal_agents(monkeypatch: Any) -> None:
    """The closed forms average unequal agents the wrong way: DSignSGD's Phase 3 uses the
    arithmetic mean of σ_i (not the harmonic), DCSGD (1 + ω̄)·mean σ_i² (not mean (1+ω_i)σ_i²)."""
    from compsde.theory import curves

    def wrong(original: Any) -> Any:
        def coefficients(model: QuadraticModel, kind: str) -> Any:
            if model.agents > 1:
                mean = model.scales.mean(0, keepdims=True).repeat(model.agents, 0)
                model = model.replace(scales=mean, omegas=model.omegas * 0 + model.omega_mean)
            return original(model, kind)

        return coefficients

    mutate(monkeypatch, curves, "linear_coefficients", wrong)


def dcsgd_closed_form_without_gradient_part(monkeypatch: Any) -> None:
    """DCSGD's closed forms drop the gradient part ηλ²ω̄/N of the second-moment recursion."""
    from compsde.theory import curves

    def wrong(original: Any) -> Any:
        def coefficients(model: QuadraticModel, kind: str) -> Any:
            first, second = original(model, kind)
            if model.method == "dcsgd":
                lam, eta = model.eigenvalues, model.lr
                first = (1 - eta * lam) ** 2 if kind == "discrete" else 2 * lam
            return first, second

        return coefficients

    mutate(monkeypatch, curves, "linear_coefficients", wrong)


def vote_drift_is_mean_of_signs(monkeypatch: Any) -> None:
    """The majority vote's SDE drift is the mean of signs' mean(2q_i − 1), not P(K > N/2) −
    P(K < N/2) (the vote's amplification of the agents' agreement is lost)."""
    from compsde.sde import vote

    def wrong(original: Any) -> Any:
        def moments(sign_means: torch.Tensor, agents: int, shared: bool) -> Any:
            _mean, tie = original(sign_means, agents, shared)
            return (sign_means if shared else sign_means.mean(-2)), tie

        return moments

    mutate(monkeypatch, vote, "vote_moments", wrong)


def vote_tie_term_dropped(monkeypatch: Any) -> None:
    """The even-N vote drift uses the odd-N formula 2·P[K > N/2] − 1 (the tie counted as −1)."""
    from compsde.sde import vote

    def wrong(original: Any) -> Any:
        def moments(sign_means: torch.Tensor, agents: int, shared: bool) -> Any:
            mean, tie = original(sign_means, agents, shared)
            return mean - tie, tie

        return moments

    mutate(monkeypatch, vote, "vote_moments", wrong)


def sde_plain_means_of_unequal_agents(monkeypatch: Any) -> None:
    """The SDEs average unequal agents the wrong way: DCSGD's noise part (1 + ω̄)·mean σ_i²,
    DSignSGD's sign means taken at the arithmetic mean of σ_i."""
    from compsde.sde.moments import DCSGDMoments, DSignSGDMoments

    def wrong_dcsgd(original: Any) -> Any:
        def evaluate(self: DCSGDMoments, x: torch.Tensor) -> Any:
            saved = self.alpha, self.c
            self.alpha, self.c = (torch.full_like(v, float(v.mean())) for v in saved)
            try:
                return original(self, x)
            finally:
                self.alpha, self.c = saved

        return evaluate

    def wrong_sign(original: Any) -> Any:
        def sign_means(self: DSignSGDMoments, x: torch.Tensor) -> torch.Tensor:
            p = self.problem
            scales = p.noise.scales(p.agents, p.dim, p.batch, dtype=x.dtype, device=x.device)
            plain = scales.mean(0, keepdim=True).expand_as(scales)
            return p.noise.standard_sign_mean(p.landscape.grad(x).unsqueeze(-2) / plain)

        return sign_means

    mutate(monkeypatch, DCSGDMoments, "evaluate", wrong_dcsgd)
    mutate(monkeypatch, DSignSGDMoments, "sign_means", wrong_sign)


def sign_diffusion_averaged_after_squaring(monkeypatch: Any) -> None:
    """DSignSGD's diffusion of unequal agents averages before squaring: Diag(1 − (mean_i m_i)²)
    instead of Diag(1 − mean_i m_i²) (THEORY.md §3)."""
    from compsde.sde.diffusion import DiagonalCov
    from compsde.sde.moments import DSignSGDMoments

    def wrong(original: Any) -> Any:
        def evaluate(self: DSignSGDMoments, x: torch.Tensor) -> Any:
            drift, cov = original(self, x)
            if self.shared:
                return drift, cov
            return drift, DiagonalCov(1.0 - drift.square())

        return evaluate

    mutate(monkeypatch, DSignSGDMoments, "evaluate", wrong)
