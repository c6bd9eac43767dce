"""A tiny plain-torch MLP on a Fashion-MNIST subset as a batched :class:`Landscape` (fig1, panel D).

The training loss ``f(θ)`` is the full-batch cross-entropy of a one-hidden-layer tanh MLP
(7×7 average-pooled images → ``hidden`` → 10 classes) on ``n`` training images, evaluated for a
batch of parameter vectors ``θ`` (runs, P) at once. Stochasticity is *injected*: the methods see
``∇f(θ) + Z`` with Gaussian ``Z`` (the noise law of the problem), so the SDE's noise model is exact
and the figure tests the SDE, not a guess of the minibatch covariance. tanh keeps ``f`` smooth.

Data: Debian's ``dataset-fashion-mnist`` through :func:`compsde.nn.data.load_fashion_mnist`
(``/usr/share/datasets/fashion-mnist`` or ``$COMPSDE_FASHION_MNIST``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..landscapes import Landscape
from ..nn.data import load_fashion_mnist


def load_subset(n: int, pool: int = 4) -> tuple[Tensor, Tensor]:
    """The first ``n`` training images, ``pool×pool`` average-pooled and standardised
    (float64, shape (n, (28/pool)²)), and their labels (int64, shape (n,))."""
    data = load_fashion_mnist()
    images = data.x_train[:n].reshape(-1, 28, 28).numpy().astype(np.float64) / 255.0
    labels = data.y_train[:n].numpy().astype(np.int64)
    side = 28 // pool
    pooled = images[:, : side * pool, : side * pool].reshape(len(images), side, pool, side, pool)
    features = pooled.mean(axis=(2, 4)).reshape(len(images), side * side)
    features = (features - features.mean(0)) / (features.std(0) + 1e-8)
    return torch.from_numpy(features), torch.from_numpy(labels)


class MLPLandscape(Landscape):
    """Full-batch cross-entropy of a tanh MLP; ``θ`` (…, P) packs ``W1, b1, W2, b2``."""

    name = "mlp"

    def __init__(self, features: Tensor, labels: Tensor, hidden: int = 16, classes: int = 10):
        super().__init__()
        self.features, self.labels = features, labels
        self.inputs, self.hidden, self.classes = features.shape[1], hidden, classes
        self.shapes = [(hidden, self.inputs), (hidden,), (classes, hidden), (classes,)]
        self.dim = sum(int(np.prod(s)) for s in self.shapes)
        self.minimum = None
        self.spec = f"mlp:n={features.shape[0]},inputs={self.inputs},hidden={hidden}"

    def init(self, generator: torch.Generator) -> Tensor:
        """A standard initialisation (uniform ±1/√fan_in), shape (P,)."""
        parts = []
        fan_ins = (self.inputs, self.inputs, self.hidden, self.hidden)
        for shape, fan_in in zip(self.shapes, fan_ins, strict=True):
            bound = fan_in ** -0.5
            parts.append((torch.rand(int(np.prod(shape)), generator=generator,
                                     dtype=torch.float64) * 2 - 1) * bound)
        return torch.cat(parts)

    def _unpack(self, theta: Tensor) -> list[Tensor]:
        out, start = [], 0
        lead = theta.shape[:-1]
        for shape in self.shapes:
            size = int(np.prod(shape))
            out.append(theta[..., start:start + size].reshape(*lead, *shape))
            start += size
        return out

    @staticmethod
    def _logits(feats: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        """(runs, n, classes) logits of ``tanh(X W1ᵀ + b1) W2ᵀ + b2`` for every run."""
        hidden = torch.tanh(torch.baddbmm(b1.unsqueeze(1), feats.expand(w1.shape[0], -1, -1),
                                          w1.transpose(1, 2)))
        return torch.baddbmm(b2.unsqueeze(1), hidden, w2.transpose(1, 2))

    def value(self, x: Tensor) -> Tensor:
        """Mean cross-entropy over the ``n`` images, for every parameter vector: (…,)."""
        x = self._check(x)
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.dim)
        w1, b1, w2, b2 = self._unpack(flat)
        feats = self._param("features", self.features, flat)
        logits = self._logits(feats, w1, b1, w2, b2)
        labels = self.labels.to(x.device)
        logp = torch.log_softmax(logits, dim=-1)
        nll = -logp.gather(-1, labels.expand(flat.shape[0], -1).unsqueeze(-1)).squeeze(-1)
        return nll.mean(-1).reshape(lead)

    def grad(self, x: Tensor) -> Tensor:
        """``∇f(θ)`` by autograd (rows are independent; differentiable if ``x`` needs grad)."""
        x = self._check(x)
        if x.requires_grad:   # called inside a Hessian computation
            (g,) = torch.autograd.grad(self.value(x).sum(), x, create_graph=True)
            return g
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.value(xr).sum(), xr)
        return g

    def accuracy(self, x: Tensor) -> Tensor:
        """Training accuracy of every parameter vector, (…,)."""
        flat = x.reshape(-1, self.dim)
        w1, b1, w2, b2 = self._unpack(flat)
        feats = self._param("features", self.features, flat)
        logits = self._logits(feats, w1, b1, w2, b2)
        correct = (logits.argmax(-1) == self.labels.to(x.device)).to(x.dtype).mean(-1)
        return correct.reshape(x.shape[:-1])
