"""compsde: communication-compressed distributed training, modelled by SDEs.

Simulate DSGD, DCSGD (unbiased compression) and DSignSGD (sign compression), model them with
SDEs, compute closed-form bounds and scaling rules, and run them for real on torch.distributed.
"""

from .problem import Problem
from .recording import RunResult
from .simulation import simulate

__all__ = ["Problem", "RunResult", "simulate"]
__version__ = "0.1.0"
