"""Message moments: the only per-method input the SDE layer needs (THEORY.md §3).

For a method whose agents send ``m_i`` and a server that averages them, the order-1 SDE is
``dX = −mean_i E[m_i] dt + √(η/N) · √S dW`` with ``S = mean_i Cov[m_i]``. This module computes
the drift ``b = −mean_i E[m_i]`` and ``S`` at a batch of points ``x`` (runs, d):

- DSGD:      ``b = −∇f``, ``S = Diag(mean_i σ_i²)``.
- DCSGD:     ``b = −∇f``, ``S = mean_i (Σ_i + E_Z Φ_i(∇f + Z_i))``; for compressors with
  ``Φ(g) = Diag(α g²) + c g gᵀ`` (identity, Rand-k, Bernoulli) the average over the noise is exact:
  ``S = Diag(mean_i σ_i²(1 + α_i + c_i) + ᾱ (∇f)²) + c̄ ∇f∇fᵀ`` (diagonal plus rank one).
  Other unbiased compressors (QSGD, natural) average ``Φ`` over M noise draws (Monte-Carlo).
- DSignSGD:  ``E[sign(g_i)] = 2F(∇f/σ_i) − 1`` (erf for Gaussian, the t CDF for Student-t, any
  ν), ``S = Diag(1 − mean_i E[sign g_i]²)`` (independent noise coordinates).
- Fallback (``mode="monte-carlo"``): mean and covariance of M sampled messages per agent,
  for any method and noise law; ``S`` is then the sample covariance (a rank ≤ N(M−1) factor).

``description`` says which of these was used; results record it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_choice, check_int
from ..compressors import Compressor
from ..problem import Problem
from .diffusion import Covariance, DiagonalCov, DiagRankOneCov, FactorCov

MODES = ("auto", "closed-form", "monte-carlo")
# Compressors whose Φ(g) is Diag(α g²) + c g gᵀ with constants α, c: E_Z Φ has a closed form.
QUADRATIC_COMPRESSORS = ("identity", "randk", "bernoulli")


def no_sde_reason(problem: Problem) -> str | None:
    """Why ``problem`` has no SDE (None when it has one): DSGD/DCSGD need a noise covariance;
    a stateful method other than Signum (whose pair SDE is :mod:`compsde.sde.momentum`) has
    none here (THEORY.md §8a, §8b)."""
    if problem.method.stateful and problem.method.name != "signum":
        return (f"no SDE for {problem.method.spec}: each agent keeps a buffer across steps "
                f"(the state is x and the agents' buffers) and the message moments model x "
                f"alone; EF21 with identity/randk/bernoulli on a diagonal quadratic is judged "
                f"against its exact moments by compsde validate (THEORY.md §8b), else "
                f"simulate the algorithm with compsde simulate")
    if problem.method.name in ("dsgd", "dcsgd") and not problem.noise.finite_variance:
        return (f"no SDE for {problem.method.spec} under {problem.noise.spec}: the covariance "
                f"of the gradient noise does not exist (Student-t with nu <= 2 has infinite "
                f"variance), so the diffusion of DSGD/DCSGD is undefined (THEORY.md §3, §6); "
                f"use nu > 2, Gaussian noise, or dsignsgd")
    return None


class MessageMoments:
    """Drift ``b(x) = −mean_i E[m_i]`` and ``S(x) = mean_i Cov[m_i]`` at a batch of points."""

    #: True when the drift is exact (not a Monte-Carlo estimate)
    exact_drift: bool = True
    #: how the moments are obtained, e.g. "closed form (erf)"; recorded in results
    description: str = ""
    #: noise draws per point and evaluation (sizes the integrator's memory chunks)
    samples_per_evaluation: int = 1

    def __init__(self, problem: Problem):
        self.problem = problem

    def evaluate(self, x: Tensor) -> tuple[Tensor, Covariance]:
        """``(b(x), S(x))`` for ``x`` of shape (runs, d)."""
        raise NotImplementedError

    def drift(self, x: Tensor) -> Tensor:
        """``b(x)`` only (the default evaluates both)."""
        return self.evaluate(x)[0]

    def _sigma2(self, x: Tensor) -> Tensor:
        p = self.problem
        return p.noise.variance(p.agents, p.dim, p.batch, dtype=x.dtype, device=x.device)


class DSGDMoments(MessageMoments):
    """``b = −∇f``, ``S = Diag(mean_i σ_i²)`` (THEORY.md §3)."""

    description = "closed form: S = Diag(mean_i sigma_i^2)"

    def evaluate(self, x: Tensor) -> tuple[Tensor, Covariance]:
        sbar = self._sigma2(x).mean(0)
        return self.drift(x), DiagonalCov(sbar.expand_as(x))

    def drift(self, x: Tensor) -> Tensor:
        return -self.problem.landscape.grad(x)


class DCSGDMoments(MessageMoments):
    """``b = −∇f``, ``S = mean_i (Σ_i + E_Z Φ_i)``, exact for Diag(αg²) + c ggᵀ compressors."""

    def __init__(self, problem: Problem, samples: int = 32,
                 generator: torch.Generator | None = None):
        super().__init__(problem)
        comps = problem.method.compressors_for(problem.agents)
        self.closed = all(c.name in QUADRATIC_COMPRESSORS for c in comps)
        probe = torch.ones(problem.dim, dtype=torch.float64)
        alphas, cs = [], []
        for comp in comps:
            diag, c = comp.covariance_diag_rank_one(probe)
            alphas.append(float(diag[0]))
            cs.append(float(c))
        if not self.closed and any(c != 0.0 for c in cs):
            raise ValueError("DCSGD moments: a compressor outside "
                             f"{', '.join(QUADRATIC_COMPRESSORS)} with a rank-one covariance "
                             "term needs mode='monte-carlo'")
        self.alpha = torch.tensor(alphas, dtype=torch.float64)   # (agents,)
        self.c = torch.tensor(cs, dtype=torch.float64)
        self.c_mean = float(self.c.mean())
        self.samples = check_int("samples", samples, minimum=1)
        self.samples_per_evaluation = 1 if self.closed else self.samples
        self.generator = generator
        names = sorted({c.name for c in comps})
        if self.closed:
            shape = "Diag + rank one" if self.c_mean != 0 else "diagonal"
            self.description = f"closed form ({'/'.join(names)}): S = {shape}"
        else:
            self.description = (f"monte-carlo: E_Z[Phi(grad + Z)] of {'/'.join(names)} averaged "
                                f"over {self.samples} noise draws per evaluation; drift exact")

    def drift(self, x: Tensor) -> Tensor:
        return -self.problem.landscape.grad(x)

    def evaluate(self, x: Tensor) -> tuple[Tensor, Covariance]:
        p = self.problem
        grad = p.landscape.grad(x)
        sigma2 = self._sigma2(x)                                     # (agents, d)
        alpha = self.alpha.to(x.dtype).to(x.device)
        c = self.c.to(x.dtype).to(x.device)
        if self.closed:
            base = (sigma2 * (1.0 + alpha + c)[:, None]).mean(0)   # (d,)
            diag = (grad * grad).mul_(float(alpha.mean())).add_(base)
        else:
            diag = sigma2.mean(0) + self._noise_averaged_phi(grad)
        cov: Covariance = (DiagRankOneCov(diag, self.c_mean, grad) if self.c_mean != 0.0
                           else DiagonalCov(diag))
        return -grad, cov

    def _noise_averaged_phi(self, grad: Tensor) -> Tensor:
        """``mean_i E_Z D_i(∇f + Z_i)`` by Monte-Carlo over the gradient noise, (runs, d).

        The draws are batched, a few million numbers at a time.
        """
        p = self.problem
        comps = p.method.compressors_for(p.agents)
        if all(c is comps[0] for c in comps):
            groups: list[tuple[Compressor, Tensor | None]] = [(comps[0], None)]
        else:
            groups = [(c, torch.tensor([i for i, o in enumerate(comps) if o is c],
                                       device=grad.device)) for c in dict.fromkeys(comps)]
        runs = grad.shape[0]
        per_draw = runs * p.agents * p.dim
        block = max(1, min(self.samples, (1 << 22) // max(per_draw, 1)))
        total = torch.zeros_like(grad)
        done = 0
        while done < self.samples:
            size = min(block, self.samples - done)
            g = p.noise.sample((size, runs, p.agents, p.dim), self.generator, p.batch,
                               dtype=grad.dtype, device=grad.device).add_(grad.unsqueeze(-2))
            for comp, index in groups:
                picked = g if index is None else g.index_select(2, index)
                total.add_(comp.covariance_diag_rank_one(picked)[0].sum((0, 2)))
            done += size
        return total.div_(self.samples * p.agents)


class DSignSGDMoments(MessageMoments):
    """``E sign(g_i) = 2F(∇f/σ_i) − 1``; ``b = −mean_i``, ``S = Diag(1 − mean_i E[sign]²)``.

    When every agent has the same scales (the usual case) the agents' sign means coincide and
    are computed once, on (runs, d) instead of (runs, agents, d).
    """

    def __init__(self, problem: Problem):
        super().__init__(problem)
        law = problem.noise
        kind = "erf" if law.name == "gaussian" else f"Student-t CDF, nu={getattr(law, 'nu', '?')}"
        self.description = f"closed form ({kind}): S = Diag(1 - mean_i E[sign]^2)"
        scales = law.scales(problem.agents, problem.dim, problem.batch)
        self.shared = bool((scales == scales[:1]).all()) and hasattr(law, "standard_sign_mean")
        self.exact_unit = law.name == "gaussian"   # |erf| <= 1 exactly, so 1 - m² >= 0
        self._inverse: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def _shared_sign_mean(self, grad: Tensor) -> Tensor:
        """``2F(∇f/σ) − 1`` with the one scale row all agents share, (runs, d)."""
        key = (grad.dtype, grad.device)
        inverse = self._inverse.get(key)
        if inverse is None:
            p = self.problem
            row = p.noise.scales(p.agents, p.dim, p.batch, dtype=grad.dtype, device=grad.device)
            inverse = self._inverse[key] = row[0].reciprocal()
        return self.problem.noise.standard_sign_mean(grad * inverse)

    def sign_means(self, x: Tensor) -> Tensor:
        """``E[sign(g_i)]`` per agent, shape (runs, agents, d)."""
        p = self.problem
        return p.noise.sign_mean(p.landscape.grad(x), p.agents, p.batch)

    def evaluate(self, x: Tensor) -> tuple[Tensor, Covariance]:
        if self.shared:
            m = self._shared_sign_mean(self.problem.landscape.grad(x))
            diag = torch.addcmul(torch.ones_like(m), m, m, value=-1.0)
            return m.neg_(), DiagonalCov(diag, nonnegative=self.exact_unit)
        m = self.sign_means(x)
        drift = m.mean(-2).neg_()
        diag = m.square_().mean(-2).neg_().add_(1.0)
        return drift, DiagonalCov(diag)

    def drift(self, x: Tensor) -> Tensor:
        if self.shared:
            return self._shared_sign_mean(self.problem.landscape.grad(x)).neg_()
        return self.sign_means(x).mean(-2).neg_()


class MonteCarloMoments(MessageMoments):
    """Sample mean and covariance of ``samples`` messages per agent at every evaluation.

    ``S ≈ (1/N) Σ_i Ĉov[m_i]`` is applied through the centred samples, a (d, N·M) factor, so no
    decomposition is needed. Both the drift and ``S`` carry Monte-Carlo error ~ 1/√M.
    """

    exact_drift = False

    def __init__(self, problem: Problem, samples: int = 32,
                 generator: torch.Generator | None = None):
        super().__init__(problem)
        self.samples = check_int("samples", samples, minimum=2)
        self.samples_per_evaluation = self.samples
        self.generator = generator
        self.description = (f"monte-carlo: mean and covariance of {self.samples} sampled messages "
                            f"per agent per evaluation (no closed form used)")

    def evaluate(self, x: Tensor) -> tuple[Tensor, Covariance]:
        p = self.problem
        runs, d, n, m = x.shape[0], p.dim, p.agents, self.samples
        grad = p.landscape.grad(x)
        g = p.noise.sample((m, runs, n, d), self.generator, p.batch, dtype=x.dtype,
                           device=x.device).add_(grad[None, :, None, :])
        msgs = p.method.messages(g, self.generator)                   # (M, runs, N, d)
        per_agent = msgs.mean(0)                                        # (runs, N, d)
        drift = per_agent.mean(-2).neg_()
        centred = (msgs - per_agent).div_(float(n * (m - 1)) ** 0.5)
        factor = centred.permute(1, 3, 0, 2).reshape(runs, d, m * n)
        return drift, FactorCov(factor)


def message_moments(problem: Problem, mode: str = "auto", samples: int = 32,
                    generator: torch.Generator | None = None) -> MessageMoments:
    """The moments of ``problem``'s method: closed forms where they exist (``"auto"``).

    ``mode="closed-form"`` refuses pairs without one; ``"monte-carlo"`` estimates everything
    from ``samples`` messages per evaluation (THEORY.md §3). Raises ValueError for pairs with no
    SDE (DSGD/DCSGD under Student-t noise with ν ≤ 2).
    """
    mode = check_choice("moments", mode, MODES)
    reason = no_sde_reason(problem)
    if reason is not None:
        raise ValueError(reason)
    name = problem.method.name
    if problem.method.server == "vote":
        if mode == "monte-carlo":
            raise ValueError(f"moments 'monte-carlo' averages per-agent messages, which is not "
                             f"the server's vote of {problem.method.spec}; use moments='auto' "
                             f"(its closed form, THEORY.md §8)")
        from .vote import MajorityVoteMoments

        return MajorityVoteMoments(problem)
    if mode == "monte-carlo":
        return MonteCarloMoments(problem, samples, generator)
    if name == "dsgd":
        return DSGDMoments(problem)
    if name == "dsignsgd":
        return DSignSGDMoments(problem)
    if name != "dcsgd":
        if mode == "closed-form":
            raise ValueError(f"moments 'closed-form' is not available for method "
                             f"{problem.method.spec!r}; use moments='monte-carlo'")
        return MonteCarloMoments(problem, max(samples, 2), generator)
    moments = DCSGDMoments(problem, samples, generator)
    if mode == "closed-form" and not moments.closed:
        raise ValueError(f"moments 'closed-form' is available for dcsgd with "
                         f"{', '.join(QUADRATIC_COMPRESSORS)} only; got {problem.method.spec} "
                         f"(use moments='auto' or 'monte-carlo')")
    return moments
