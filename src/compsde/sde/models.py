"""SDE models of DSGD, DCSGD and DSignSGD built from message moments (THEORY.md §3, §8).

A model is ``dX = b(X) dt + √(η/N) · √S(X) dW`` (time ``t = k η``). :class:`SDEModel` wraps the
method's :mod:`moments <compsde.sde.moments>`; the integrator asks it for ``(b, S)`` at a batch
of points and for the scalar ``η/N`` in front of ``S``. Optional (``stability=True``): the
stability-corrected drift of THEORY.md §8, ``b + (η/2) J_b b`` — for DSGD/DCSGD (``b = −∇f``)
exactly ``−∇f + (η/2) ∇²f ∇f``, so DSGD on ``λx²/2`` decays at ``2λ(1 − λη/2)`` and, like the
algorithm, stops contracting at ``η = 2/λ``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..problem import Problem
from .diffusion import Covariance
from .moments import MessageMoments, message_moments


def jacobian_vector(func: Callable[[Tensor], Tensor], x: Tensor, v: Tensor) -> Tensor:
    """``J_func(x) v`` per row by a central difference with a step scaled to ``x`` and ``v``.

    The step ``h = ε^{1/3} (1 + ‖x‖∞)/‖v‖∞`` balances truncation (O(h²)) and round-off; exact
    (to round-off) for affine ``func`` such as the drift on a quadratic.
    """
    eps = torch.finfo(x.dtype).eps ** (1.0 / 3.0)
    vmax = v.abs().amax(-1, keepdim=True)
    h = eps * (1.0 + x.abs().amax(-1, keepdim=True)) / vmax.clamp_min(torch.finfo(x.dtype).tiny)
    h = torch.where(vmax > 0, h, torch.zeros_like(h))
    step = h * v
    diff = func(x + step) - func(x - step)
    return torch.where(vmax > 0, diff / (2.0 * h).clamp_min(torch.finfo(x.dtype).tiny),
                       torch.zeros_like(diff))


class SDEModel:
    """``dX = b(X) dt + √(η/N) √S(X) dW`` of a :class:`~compsde.problem.Problem`.

    ``evaluate(x, lr)`` returns ``(b, S)``; ``noise_scale(lr) = lr/N`` multiplies ``S``.
    Subclasses (the phase models of :mod:`compsde.sde.phases`) override ``evaluate``.
    """

    name = "sde"

    def __init__(self, problem: Problem, moments: MessageMoments | None = None, *,
                 stability: bool = False):
        self.problem = problem
        self.moments = moments
        self.stability = bool(stability)
        if self.stability and moments is not None and not moments.exact_drift:
            raise ValueError("stability=True needs an exact drift; the drift of moments "
                             "'monte-carlo' is an estimate (use moments='auto')")

    def noise_scale(self, lr: float) -> float:
        """The factor ``η/N`` in front of ``S`` (THEORY.md §3)."""
        return lr / self.problem.agents

    def evaluate(self, x: Tensor, lr: float) -> tuple[Tensor, Covariance]:
        """Drift ``b(x)`` (runs, d) and ``S(x)`` (without the ``η/N`` factor)."""
        if self.moments is None:
            raise NotImplementedError
        drift, cov = self.moments.evaluate(x)
        if self.stability:
            drift = drift + (0.5 * lr) * jacobian_vector(self.moments.drift, x, drift)
        return drift, cov

    def drift(self, x: Tensor, lr: float) -> Tensor:
        """``b(x)`` only (with the stability correction when enabled)."""
        return self.evaluate(x, lr)[0]

    def describe(self) -> dict[str, Any]:
        """What the model is, for ``result.json``."""
        return {"model": self.name,
                "moments": self.moments.description if self.moments is not None else None,
                "stability_correction": self.stability}


def sde_model(problem: Problem, *, moments: str = "auto", samples: int = 32,
              generator: torch.Generator | None = None, stability: bool = False) -> SDEModel:
    """The order-1 SDE of ``problem`` (THEORY.md §3); see :func:`~compsde.sde.moments.
    message_moments` for ``moments``/``samples`` and :class:`SDEModel` for ``stability``."""
    return SDEModel(problem, message_moments(problem, moments, samples, generator),
                    stability=stability)
