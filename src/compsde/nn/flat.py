"""A network whose parameters live in one flat vector θ ∈ R^d (the d of THEORY.md §1).

:class:`FlatModel` evaluates the loss at any θ through ``torch.func.functional_call``, so the N
agents' gradients at the shared θ are one ``vmap`` over agents of ``grad`` (the training runs of
:mod:`compsde.experiments.deep`); :func:`sharpness` estimates the top Hessian eigenvalue, the
L of the scaling rules (§5).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F


class FlatModel:
    """A model whose parameters live in one flat vector ``θ ∈ R^d`` (the d of THEORY.md §1)."""

    def __init__(self, model: nn.Module):
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ValueError("model must not use BatchNorm when agents are simulated with vmap; "
                             "use GroupNorm, e.g. 'resnet:depth=8,norm=group'")
        self.module = model
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in params]
        self.shapes = [p.shape for _, p in params]
        self.sizes = [p.numel() for _, p in params]
        self.buffers = dict(model.named_buffers())
        self.theta0 = torch.cat([p.detach().reshape(-1) for _, p in params]).clone()

    @property
    def dim(self) -> int:
        return int(self.theta0.numel())

    def loss(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Mean cross-entropy of the model with parameters ``theta`` on ``(x, y)``."""
        views = torch.split(theta, self.sizes)
        params = {n: v.view(s) for n, v, s in zip(self.names, views, self.shapes, strict=True)}
        return F.cross_entropy(functional_call(self.module, (params, self.buffers), (x,)), y)

    def agent_grads(self, theta: Tensor, x: Tensor, y: Tensor,
                    max_samples: int | None = None) -> Tensor:
        """Per-agent gradients ``(N, d)`` of the agents' batches ``x (N, B, ...)``, ``y (N, B)``.

        ``max_samples`` bounds the examples per vmapped call (memory): agents go in chunks of
        ``max(1, max_samples // B)``; each agent's gradient is the same either way.
        """
        agents, batch = x.shape[:2]
        chunk = agents if max_samples is None else max(1, max_samples // batch)
        per_agent = vmap(grad(self.loss), in_dims=(None, 0, 0))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            if chunk >= agents:
                return per_agent(theta, x, y)
            return torch.cat([per_agent(theta, x[i:i + chunk], y[i:i + chunk])
                              for i in range(0, agents, chunk)])

    def agent_grads_loop(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """The same as :meth:`agent_grads` with a Python loop over agents (for comparison)."""
        g = grad(self.loss)
        return torch.stack([g(theta, x[i], y[i]) for i in range(x.shape[0])])

    @torch.no_grad()
    def eval_loss(self, theta: Tensor, x: Tensor, y: Tensor, chunk: int = 2048) -> float:
        total = 0.0
        for start in range(0, len(y), chunk):
            part = slice(start, start + chunk)
            total += float(self.loss(theta, x[part], y[part])) * len(y[part])
        return total / len(y)

    @torch.no_grad()
    def accuracy(self, theta: Tensor, x: Tensor, y: Tensor, chunk: int = 2048) -> float:
        """Fraction of ``(x, y)`` whose largest logit is the label."""
        views = torch.split(theta, self.sizes)
        params = {n: v.view(s) for n, v, s in zip(self.names, views, self.shapes, strict=True)}
        right = 0
        for start in range(0, len(y), chunk):
            part = slice(start, start + chunk)
            logits = functional_call(self.module, (params, self.buffers), (x[part],))
            right += int((logits.argmax(dim=-1) == y[part]).sum())
        return right / len(y)


def sharpness(flat: FlatModel, theta: Tensor, x: Tensor, y: Tensor, iters: int,
              generator: torch.Generator) -> float:
    """Largest |eigenvalue| of the loss Hessian at ``theta`` on ``(x, y)`` (the L of §5).

    Power iteration on Hessian-vector products by central differences of gradients in float64
    (step 1e-4 along a unit vector; works for every model, attention included).
    """
    module = flat.module
    dtype = theta.dtype
    module.double()
    try:
        flat64 = FlatModel(module)
        th, xd = theta.double(), x.double()
        g = grad(flat64.loss)
        v = torch.randn(th.shape, generator=generator, dtype=th.dtype).to(th.device)
        v /= v.norm()
        value = 0.0
        eps = 1e-4
        for _ in range(iters):
            hv = (g(th + eps * v, xd, y) - g(th - eps * v, xd, y)) / (2 * eps)
            value = float(torch.dot(hv, v))
            norm = hv.norm()
            if not torch.isfinite(norm) or norm == 0:
                break
            v = hv / norm
        return abs(value)
    finally:
        module.to(dtype)
