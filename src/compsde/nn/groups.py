"""Parameter groups of a ``compsde.nn`` model, as index sets into its flat parameter vector.

Groups (by the module that owns a parameter): ``embeddings`` (token/position embeddings, a ViT's
patch embedding and class token), ``attention`` (query/key/value and output projections),
``mlp`` (dense layers: transformer MLPs, an MLP's hidden layers), ``norms`` (LayerNorm,
GroupNorm, BatchNorm), ``conv`` (convolutions) and ``head`` (the last linear layer of a
classifier; a GPT has none, its output layer is the tied token embedding). The flat vector is
``torch.cat([p.reshape(-1) for p in model.parameters() if p.requires_grad])``, the layout of
every gradient in compsde (:func:`compsde.diagnose.measure.flat_grad`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

GROUP_NAMES = ("embeddings", "attention", "mlp", "norms", "conv", "head")
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def _group_of(model: nn.Module, name: str, head: str | None) -> str:
    from .gpt import GPT
    from .models import ViT, _Block

    owner_name = name.rpartition(".")[0]
    owner = model.get_submodule(owner_name) if owner_name else model
    parent_name = owner_name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(owner, (nn.Embedding, GPT, ViT)) or (owner_name == "embed" and
                                                        isinstance(model, ViT)):
        return "embeddings"               # token/patch embeddings, positions, class token
    if isinstance(owner, _NORMS):
        return "norms"
    if isinstance(owner, nn.Conv2d):
        return "conv"
    if isinstance(owner, nn.Linear):
        if isinstance(parent, _Block) and owner_name.rpartition(".")[2] in ("qkv", "proj"):
            return "attention"
        return "head" if owner_name == head else "mlp"
    return "mlp"


def parameter_groups(model: nn.Module) -> dict[str, Tensor]:
    """``{group: int64 indices into the flat parameter vector}`` for the non-empty groups, in
    the order of :data:`GROUP_NAMES` (module docstring)."""
    from .gpt import GPT

    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    head = None if isinstance(model, GPT) or not linears else linears[-1]
    parts: dict[str, list[Tensor]] = {g: [] for g in GROUP_NAMES}
    offset = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts[_group_of(model, name, head)].append(torch.arange(offset, offset + p.numel()))
        offset += p.numel()
    return {g: torch.cat(v) for g, v in parts.items() if v}
