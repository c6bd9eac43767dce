"""A model of several fully_shard blocks whose gradients are known inputs, and its cases."""

from __future__ import annotations

import torch
from torch import nn

STEPS = 3
LR = 0.1
# blocks of parameter shapes: dim 0 not divisible by the world size somewhere (padding)
BLOCKS = [[(37, 5), (64,)], [(7,), (100, 3)], [(1001,)]]

CASES: dict[str, tuple[str, dict]] = {
    "dsgd": ("dsgd", {}),
    "dsignsgd": ("dsignsgd", {}),
    "randk": ("dcsgd:randk:ratio=0.05", {}),
    "bernoulli": ("dcsgd:bernoulli:p=0.1", {}),
    "qsgd": ("dcsgd:qsgd:levels=4", {}),
    "natural": ("dcsgd:natural", {}),
}


class Block(nn.Module):
    def __init__(self, shapes: list[tuple[int, ...]]):
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in shapes])

    def forward(self, grads: list[torch.Tensor]) -> torch.Tensor:
        return sum((p * g).sum() for p, g in zip(self.weights, grads, strict=True))


class BlockModel(nn.Module):
    """``loss = Σ_p <p, G_p>`` over blocks: the gradient of parameter p is exactly G_p."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(shapes) for shapes in BLOCKS])

    def forward(self, grads: list[list[torch.Tensor]]) -> torch.Tensor:
        return sum(block(g) for block, g in zip(self.blocks, grads, strict=True))


def rank_grads(rank: int, step: int) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(20_000 + 100 * rank + step)
    base = torch.Generator().manual_seed(98)
    return [[torch.randn(s, generator=base) * 0.3 + torch.randn(s, generator=gen)
             for s in shapes] for shapes in BLOCKS]
