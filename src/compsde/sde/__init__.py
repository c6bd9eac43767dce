"""SDE models of DSGD, DCSGD and DSignSGD, their integrator and DSignSGD's phases (THEORY.md §3).

``simulate_sde`` integrates a method's SDE with the same arguments and result as
:func:`compsde.simulation.simulate`; ``sde_model`` builds ``dX = b dt + √(η/N) √S dW`` from
the method's message moments; :mod:`compsde.sde.phases` holds DSignSGD's phase models.
"""

from .diffusion import Covariance, DiagonalCov, DiagRankOneCov, FactorCov
from .integrate import euler_maruyama, simulate_sde
from .models import SDEModel, sde_model
from .moments import MessageMoments, message_moments, no_sde_reason

__all__ = [
    "Covariance",
    "DiagRankOneCov",
    "DiagonalCov",
    "FactorCov",
    "MessageMoments",
    "SDEModel",
    "euler_maruyama",
    "message_moments",
    "no_sde_reason",
    "sde_model",
    "simulate_sde",
]
