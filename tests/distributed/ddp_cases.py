"""Cases and deterministic per-rank gradients shared by the hook worker and the tests."""

from __future__ import annotations

import torch
from torch import nn

STEPS = 3
MLP_CAP_MB = 0.005
LR = 0.1
SHAPES = [(60_000,), (100, 120), (3000,), (7,)]   # 300 kB: several 100 kB DDP buckets
NAMES = [f"weights.{i}" for i in range(len(SHAPES))]   # LinearModel's parameters

# name -> (method spec, register options)
CASES: dict[str, tuple[str, dict]] = {
    "dsgd": ("dsgd", {}),
    "dsignsgd": ("dsignsgd", {}),
    "dsignsgd-int8": ("dsignsgd", {"sign_wire": "int8"}),
    "dsignsgd-bits": ("dsignsgd", {"sign_wire": "bits"}),
    "dsignsgd-scatter": ("dsignsgd", {"sign_wire": "scatter"}),
    "dsignsgd-digits": ("dsignsgd", {"sign_wire": "digits"}),
    "randk": ("dcsgd:randk:ratio=0.05", {}),
    "randk-independent": ("dcsgd:randk:ratio=0.05", {"randomness": "independent"}),
    "bernoulli": ("dcsgd:bernoulli:p=0.1", {}),
    "bernoulli-independent": ("dcsgd:bernoulli:p=0.1", {"randomness": "independent"}),
    "qsgd": ("dcsgd:qsgd:levels=4", {}),
    "natural": ("dcsgd:natural", {}),
    "dsignsgd-cauchy": ("dsignsgd", {"noise": "student-t:nu=1,scale=0.5"}),
}


# Gradient accumulation: a micro-step under ``no_sync()`` (no hook call), then the step whose
# backward reduces the sum of both micro-batches' gradients once.
ACCUMULATE_CASES: dict[str, tuple[str, dict]] = {
    "randk-accumulate": ("dcsgd:randk:ratio=0.05", {}),
    "dsignsgd-accumulate": ("dsignsgd", {}),
}
MICRO_OFFSET = 1000      # rank_grads(rank, step + MICRO_OFFSET) is the extra micro-batch

# The cases of the 8-rank launch (8 processes share the machine's cores): every sign wire,
# exact Rand-k coordinates, the non-finite policy on the reduce-scatter.
WORLD8_CASES = ("dsignsgd", "dsignsgd-bits", "dsignsgd-scatter", "randk", "mlp",
                "nan-raise-scatter", "nan-skip-scatter")


def cases(world: int) -> dict[str, tuple[str, dict]]:
    """CASES plus per-rank Gaussian noise scales 1, 2, …, N (THEORY.md §1 heterogeneity)."""
    scales = "/".join(str(i + 1) for i in range(world))
    return {**CASES, "dsgd-gaussian": ("dsgd", {"noise": f"gaussian:scale={scales}"})}
# name -> (spec, options, step at which the last rank's gradient gets a NaN)
ERROR_CASES: dict[str, tuple[str, dict, int | None]] = {
    "nan-raise-sign": ("dsignsgd", {}, 1),
    "nan-raise-dsgd": ("dsgd", {}, 1),
    "nan-raise-randk": ("dcsgd:randk:ratio=0.05", {}, 1),
    "nan-skip-sign": ("dsignsgd", {"on_nonfinite": "skip"}, 1),
    "nan-raise-scatter": ("dsignsgd", {"sign_wire": "scatter"}, 1),
    "nan-skip-scatter": ("dsignsgd", {"sign_wire": "scatter", "on_nonfinite": "skip"}, 1),
    "nan-skip-qsgd": ("dcsgd:qsgd:levels=4", {"on_nonfinite": "skip"}, 1),
    "k-too-large": ("dcsgd:randk:k=50000", {}, None),
}


class LinearModel(nn.Module):
    """``loss = Σ_p <p, G_p>``: the gradient of parameter p is exactly the input G_p."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in SHAPES])

    def forward(self, grads: list[torch.Tensor]) -> torch.Tensor:
        return sum((p * g).sum() for p, g in zip(self.weights, grads, strict=True))


def rank_grads(rank: int, step: int) -> list[torch.Tensor]:
    """The gradient rank ``rank`` sees at ``step`` (a mean per coordinate plus noise)."""
    gen = torch.Generator().manual_seed(10_000 + 100 * rank + step)
    base = torch.Generator().manual_seed(99)
    return [torch.randn(s, generator=base) * 0.3 + torch.randn(s, generator=gen)
            for s in SHAPES]


def mlp_model() -> nn.Module:
    from compsde.nn.models import make_model

    return make_model("mlp:hidden=64/32", (1, 8, 8), 10, seed=5)


def mlp_batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(500 + 10 * rank + step)
    return torch.randn(16, 1, 8, 8, generator=gen), torch.randint(10, (16,), generator=gen)


def replay(spec: str, options: dict, world: int, layouts: list[dict]) -> tuple:
    """The ranks' STEPS steps replayed in one process by an AgentSimulator with each step's
    bucket ``layouts`` (as the hook recorded them): ``(simulator, parameters after each step)``."""
    from compsde.distributed import AgentSimulator

    sim = AgentSimulator(spec, world, seed=7, **options)
    params = [torch.zeros(s) for s in SHAPES]
    history = []
    for step in range(STEPS):
        per_rank = [rank_grads(r, step) for r in range(world)]
        grads = {n: torch.stack([g[i] for g in per_rank]) for i, n in enumerate(NAMES)}
        mean = sim.reduce(grads, layouts[step])
        opt = torch.optim.SGD(params, lr=LR)
        for p, n in zip(params, NAMES, strict=True):
            p.grad = mean[n].clone()
        opt.step()
        history.append([p.clone() for p in params])
    return sim, history
