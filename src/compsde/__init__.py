"""compsde: communication-compressed distributed training, modelled by SDEs.

Simulate DSGD, DCSGD (unbiased compression) and DSignSGD (sign compression), model them with
SDEs, compute closed-form bounds and scaling rules, and run them for real on torch.distributed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .problem import Problem
from .recording import RunResult
from .simulation import simulate

# Subpackages load on first use (``compsde.distributed.register(...)`` after ``import compsde``)
# so that ``import compsde`` stays light: torch.distributed, the networks and matplotlib are
# imported only by what needs them.
SUBMODULES = ("advise", "compressors", "diagnose", "distributed", "experiments", "io",
              "landscapes", "methods", "nn", "noise", "plotting", "scaling", "sde", "theory",
              "validate")

__all__ = ["Problem", "RunResult", "simulate", *SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'compsde' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES])
