"""Measure the gradient noise of a ``compsde.nn`` model on an offline data set.

Steps: build the model (seeded) and load the data; optionally ``warmup`` steps of plain SGD at
the given lr and batch (the noise near a trained point is what the stationary predictions are
about; at initialisation gradients are large and most coordinates sit in DSignSGD's Phase 1);
then ``samples`` disjoint mini-batches of size B give the gradients (:mod:`compsde.diagnose`,
with ν̂ and the phases per parameter group of :func:`compsde.nn.groups.parameter_groups`)
and a larger batch of ``curvature_batch`` examples gives L. Loss: cross-entropy (next-token
cross-entropy for ``gpt`` on ``text``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from .._checks import check_device, check_int, check_positive
from ..diagnose.measure import DEFAULT_COMPRESSORS, measure_model
from ..noise import make as make_noise


def _device(value: str | torch.device) -> torch.device:
    """A torch device that exists here; ValueError naming ``device`` otherwise."""
    return check_device(value, "device")


CURVATURE_BATCH = 1024  # the default; a smaller training set is used whole


def measure_dataset(model: str = "mlp", data: str = "fashion-mnist", *, batch: int = 128,
                    lr: float = 0.05, samples: int = 64, warmup: int = 200,
                    curvature_batch: int = CURVATURE_BATCH, inject: str | None = None,
                    seed: int = 0,
                    compressors: Sequence[str] = DEFAULT_COMPRESSORS,
                    max_coords: int = 8000, device: str | torch.device = "cpu",
                    return_model: bool = False) -> Any:
    """Train ``warmup`` SGD steps, then measure noise and curvature (module docstring).

    The model and batches live on ``device``; the noise statistics are computed on the CPU.
    ``return_model``: return ``(measurement, warmed-up model, data set)`` (for ``--verify``).
    """
    from ..nn import load_dataset, make_model
    from ..nn.groups import parameter_groups

    batch = check_int("batch", batch, minimum=1)
    lr = check_positive("lr", lr)
    samples = check_int("samples", samples, minimum=16)
    warmup = check_int("warmup", warmup, minimum=0)
    curvature_batch = check_int("curvature_batch", curvature_batch, minimum=0)  # 0: no L
    seed = check_int("seed", seed, minimum=0)
    law = make_noise(inject) if inject else None
    dataset = load_dataset(data)
    device = _device(device)
    net = make_model(model, dataset.image_shape, dataset.classes, seed=seed, device=device)
    n = len(dataset.y_train)
    if curvature_batch > max(n, CURVATURE_BATCH):  # up to the default: the whole set
        raise ValueError(f"curvature_batch must be at most the training set size {n} (the "
                         f"examples of the Hessian-vector products), got {curvature_batch}")
    if samples * batch > n:
        raise ValueError(f"samples × batch must be at most the training set size {n} "
                         f"(disjoint mini-batches), got {samples} × {batch}")
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    order = torch.randperm(n, generator=gen)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    per_epoch = n // batch
    for step in range(warmup):
        slot = step % per_epoch
        if slot == 0 and step:
            order = torch.randperm(n, generator=gen)
        x, y = dataset.train_batch(order[slot * batch:(slot + 1) * batch], device)
        loss = loss_fn(net(x), y)
        if not math.isfinite(float(loss.detach())):
            raise ValueError(f"lr {lr:g} diverged during the {warmup} warm-up steps (loss "
                             f"became {float(loss.detach())}); lower lr")
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():                     # plain SGD (torch.optim imports dynamo)
            torch._foreach_add_(params, grads, alpha=-lr)
    fresh = torch.randperm(n, generator=gen)

    def batch_fn(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset.train_batch(fresh[m * batch:(m + 1) * batch], device)

    curv_index = fresh[-min(curvature_batch, n):]
    result = measure_model(net, loss_fn, batch_fn, samples=samples, batch=batch,
                           curvature_data=dataset.train_batch(curv_index, device)
                           if curvature_batch else None, inject=law,
                           generator=gen, compressors=list(compressors), max_coords=max_coords,
                           groups=parameter_groups(net))
    result.source = (f"{model} on {data}, batch {batch}, after {warmup} SGD steps at lr {lr:g}"
                     + (f", injected {law.spec}" if law is not None else ""))
    return (result, net, dataset) if return_model else result
