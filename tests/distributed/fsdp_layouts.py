"""FSDP2 layouts as frameworks produce them, on a model whose gradients are known inputs.

``LayoutModel`` has leaves ``a``, ``b.inner``, ``b`` (own weights) and ``c``; ``loss =
Σ_p <p, G_p>``, so the gradient of parameter ``p`` is exactly ``G_p`` (``grads_for``). Each
layout shards it as some real code does; ``UNITS`` is the partition into units each must give
(written out by hand: the reference the library's unit discovery is checked against).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LR = 0.1
STEPS = 3
SHAPES = {"a": [(37, 5), (64,)], "b.inner": [(7,)], "b": [(100, 3), (9, 2)], "c": [(1001,)]}


class Leaf(nn.Module):
    def __init__(self, shapes: list[tuple[int, ...]]):
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in shapes])

    def own(self, grads: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        return sum((p * grads[f"{prefix}weights.{i}"]).sum()
                   for i, p in enumerate(self.weights))

    def forward(self, grads: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        return self.own(grads, prefix)


class Outer(Leaf):
    def __init__(self) -> None:
        super().__init__(SHAPES["b"])
        self.inner = Leaf(SHAPES["b.inner"])

    def forward(self, grads: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        return self.inner(grads, prefix + "inner.") + self.own(grads, prefix)


class LayoutModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = Leaf(SHAPES["a"]), Outer(), Leaf(SHAPES["c"])

    def forward(self, grads: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> torch.Tensor:
        return sum(getattr(self, leaf)(grads, f"{leaf}.") for leaf in "abc" if leaf not in skip)


def sgd_from_rows(params: dict[str, torch.Tensor], names: list[str], rows: torch.Tensor,
                  shards: int) -> None:
    """SGD step of the named parameters from FSDP's flat layout: row ``r`` of ``rows`` is
    shard ``r`` of the unit's mean message (each parameter's ⌈dim0 / shards⌉ rows, padded)."""
    offset = 0
    for name in names:
        shape = params[name].shape
        width = math.ceil(shape[0] / shards) * math.prod(shape[1:])
        mean = rows[:, offset:offset + width].reshape(-1, *shape[1:])[: shape[0]]
        params[name].add_(mean, alpha=-LR)
        offset += width


def grads_for(rank: int, step: int, micro: int = 0) -> dict[str, torch.Tensor]:
    """``G_p`` of every parameter on ``rank`` at ``step`` (micro-batch ``micro``)."""
    gen = torch.Generator().manual_seed(30_000 + 100 * rank + 10 * micro + step)
    base = torch.Generator().manual_seed(97)
    shapes = dict(LayoutModel().named_parameters())
    return {name: torch.randn(p.shape, generator=base) * 0.3 + torch.randn(p.shape, generator=gen)
            for name, p in shapes.items()}


A = ["a.weights.0", "a.weights.1"]
INNER = ["b.inner.weights.0"]
B = ["b.weights.0", "b.weights.1"]
C = ["c.weights.0"]

# layout -> the partition into units it must give (in key order: model.modules() pre-order),
# each a list of parameter names in the order FSDP lays them out (the module's parameters())
UNITS: dict[str, list[list[str]]] = {
    "plain": [A, B + INNER, C],              # a, b (with its inner leaf), c; the root is empty
    "grouped": [B + INNER, A + C],           # the root, then fully_shard([a, c]) (Accelerate)
    "root": [A + B + INNER + C],             # the root alone
    "nested": [A + C, B, INNER],             # b.inner inside b inside the root
    "no-reshard": [A, B + INNER, C],
    "mixed": [A, B + INNER, C],
    "frozen": [A, B + INNER, C],             # b.inner frozen inside b's unit
    "frozen-unit": [A, B + INNER, C],        # c's unit entirely frozen
    "ignored": [["a.weights.0"], B + INNER, C],   # a.weights.1 in ignored_params
    "accumulate": [A, B + INNER, C],
}
FROZEN = {"frozen": INNER, "frozen-unit": C}
IGNORED = {"ignored": ["a.weights.1"]}


METHODS: dict[str, str] = {
    "dsgd": "dsgd",
    "dsignsgd": "dsignsgd",
    "randk": "dcsgd:randk:ratio=0.05",
    "bernoulli": "dcsgd:bernoulli:p=0.1",
    "qsgd": "dcsgd:qsgd:levels=4",
    "natural": "dcsgd:natural",
}
