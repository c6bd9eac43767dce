"""The paper's algorithms on torch.distributed: DDP communication hooks and a torchrun trainer.

``register(ddp_model, "dsignsgd", seed=0)`` makes a plain ``torch.optim.SGD`` step perform
DSGD, DCSGD or DSignSGD (THEORY.md §2) with exact bytes-on-wire accounting, on a
``DistributedDataParallel`` model (:mod:`.hooks`), a ``fully_shard`` model (:mod:`.fsdp`) or an
HSDP model, compressing only the inter-node all-reduce (:mod:`.hsdp`);
:class:`AgentSimulator` runs the same algorithm for N agents in one process;
``python -m compsde.distributed.train`` (or ``compsde train``) trains real models.
"""

from .agents import AgentSimulator, ddp_layout
from .fsdp import FSDPState
from .hooks import HookState, comm_hook, prime_buckets
from .hsdp import HSDPState
from .protocol import NonFiniteGradientError
from .register import register

__all__ = ["AgentSimulator", "FSDPState", "HSDPState", "HookState", "NonFiniteGradientError",
           "comm_hook", "ddp_layout", "prime_buckets", "register"]
