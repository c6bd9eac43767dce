"""Training sweeps on real networks with N agents simulated in one process (figures 2 and 4).

One training run follows THEORY.md §2 literally, on a real model and real data: every step each
of the N agents draws its own mini-batch of B training examples (i.i.d., with replacement, as
the theory's i.i.d.-data setting assumes), computes its gradient ``g_i`` at the shared
parameters, and sends the message of the method (``compsde.methods``) applied to the flattened
``g_i``; the server averages the messages and takes the step ``θ ← θ − η · mean_i m_i``.

Agents' gradients are computed with ``torch.func.vmap`` over agents of ``grad``. Measured on
one CPU thread (N × B = 4 × 16 and 16 × 16): ResNet-8 (width 8, 14×14) 58/110 ms per step with
vmap vs 94/335 ms with a loop over agents, a ViT (dim 32, 49 patches) 39/142 vs 57/225 ms, an
MLP 3.5/3.4 vs 7.4/37 ms — vmap costs about one batch of N·B examples. Models must therefore be
free of BatchNorm (use ``resnet:...,norm=group``): per-agent GroupNorm is what N DDP ranks
compute. ``FlatModel.agent_grads_loop`` keeps the loop for comparison.

**Gradient-noise injection** (``noise`` = σ > 0): agent i adds ``σ/√B · n_i``, ``n_i ~ N(0, I_d)``
drawn independently per agent and step, to its gradient before compressing. This is THEORY.md
§1's Gaussian noise with the §1 batch convention (a batch of B divides the scale by √B), so the
injected noise obeys the same (η, B, N) bookkeeping as mini-batch noise; it makes the noise term
dominate the small-model regime of the quick presets, which is the regime the scaling rules of
§5 are derived for. With ``noise_nu`` = ν > 0 the draws are Student-t ``σ/√B · T_i``,
``T_i ~ t_ν`` per coordinate (heavy-tailed for ν ≤ 2, §6) instead of Gaussian.

The recorded *training loss* is the cross-entropy on a fixed subset of the training set
(``eval_size`` examples) at the current parameters, every ``eval_every`` steps; with
``test_size`` > 0 the *test accuracy* on the first ``test_size`` examples of the test split is
recorded at the same steps.

**Stateful methods** (``method.stateful``: Signum's momentum, EF-signSGD's error, EF21's h_i;
THEORY.md §8a, §8b) keep one state of shape (agents, d) for the flat parameter vector, from
``method.initial_state`` (zeros), carried across steps: ``θ ← θ − η · method.step(g, state)``.
Stateless methods take ``θ ← θ − η · method.direction(g)`` as before.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .. import methods
from .._checks import check_float, check_int
from ..nn.flat import FlatModel, sharpness
from ..noise import make as noise_law

# Version of the training code path; part of every cache key (see cache.py).
TRAIN_VERSION = "deep-train-1"
TAIL = 0.5  # a run's level: the mean of the last half of its records
DIVERGED_LOSS = 1e3  # a training loss above this (or non-finite) ends the run as diverged
# Examples per vmapped gradient call (GPU, CPU): bounds the activation memory of big models.
MAX_SAMPLES = {False: 4096, True: 256}


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the random stream ``stream`` of run ``seed`` (independent streams)."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines one training run (its cache key is a hash of these fields).

    ``model``/``data`` are ``compsde.nn`` specs; ``image_size`` downsamples the images by area
    averaging (0 keeps them); ``train_size`` is the size of the training subset (0 = all);
    ``noise`` is the injected per-sample gradient-noise scale σ and ``noise_nu`` its law
    (0: Gaussian, ν > 0: Student-t with ν degrees of freedom; module docstring);
    ``sharpness_iters`` > 0 also estimates the top Hessian eigenvalue at the end of the run;
    ``test_size`` > 0 records the test accuracy on that many test examples at every record.
    """

    model: str
    data: str
    method: str
    lr: float
    batch: int
    agents: int
    steps: int
    noise: float = 0.0
    seed: int = 0
    image_size: int = 0
    train_size: int = 0
    eval_size: int = 1024
    eval_every: int = 10
    sharpness_iters: int = 0
    noise_nu: float = 0.0
    test_size: int = 0

    def __post_init__(self) -> None:
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_int("batch", self.batch, minimum=1)
        check_int("agents", self.agents, minimum=1)
        check_int("steps", self.steps, minimum=1)
        check_float("noise", self.noise, low=0.0)
        check_int("seed", self.seed, minimum=0)
        check_int("image_size", self.image_size, minimum=0)
        check_int("train_size", self.train_size, minimum=0)
        check_int("eval_size", self.eval_size, minimum=1)
        check_int("eval_every", self.eval_every, minimum=1)
        check_int("sharpness_iters", self.sharpness_iters, minimum=0)
        check_float("noise_nu", self.noise_nu, low=0.0)
        check_int("test_size", self.test_size, minimum=0)
        method = methods.make(self.method)  # validates the method spec
        method.check_agents(self.agents)

    def config(self) -> dict[str, Any]:
        """The JSON config of the run, including the training-code version (``noise_nu`` and
        ``test_size`` only when set, so configs of the runs without them keep their keys)."""
        fields = asdict(self)
        for optional in ("noise_nu", "test_size"):
            if not fields[optional]:
                del fields[optional]
        return {"kind": "train", "version": TRAIN_VERSION, **fields}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainSpec:
        fields = {k: v for k, v in config.items() if k not in ("kind", "version")}
        return cls(**fields)

    def with_(self, **changes: Any) -> TrainSpec:
        return TrainSpec(**(asdict(self) | changes))


@dataclass
class Prepared:
    """Standardised float32 training images (n, C, h, w), labels, and the fixed eval subset."""

    x: Tensor
    y: Tensor
    eval_index: Tensor
    classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]


@lru_cache(maxsize=2)
def load(data: str) -> Any:
    """``compsde.nn.load_dataset(data)``, loaded once per process."""
    from ..nn import load_dataset

    return load_dataset(data)


def data_shape(data: str, image_size: int = 0) -> tuple[tuple[int, int, int], int]:
    """Image shape (after downsampling to ``image_size``) and number of classes of ``data``
    (for token windows of ``text``: ``(T,)`` and the vocabulary size)."""
    dataset = load(data)
    if len(dataset.image_shape) != 3:
        return tuple(dataset.image_shape), dataset.classes  # type: ignore[return-value]
    c, h, w = dataset.image_shape
    return ((c, image_size, image_size) if image_size else (c, h, w)), dataset.classes


def model_dimension(model: str, shape: tuple[int, int, int], classes: int) -> int:
    """d: the number of parameters of ``compsde.nn`` model ``model`` on images of ``shape``."""
    from ..nn import count_parameters, make_model

    return count_parameters(make_model(model, shape, classes, seed=0))


@lru_cache(maxsize=4)
def prepare_data(data: str, image_size: int, train_size: int, eval_size: int) -> Prepared:
    """Take a fixed training subset of ``data``, downsample it, standardise it (once per process).

    The subset is the first ``train_size`` examples of a fixed permutation (seed 0) of the
    training split; the eval subset (the "training loss" set) is its first ``eval_size``.
    """
    dataset = load(data)
    n = len(dataset.y_train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    if train_size:
        order = order[:min(train_size, n)]
    x, y = dataset.train_batch(order)
    if image_size and image_size != x.shape[-1]:
        x = F.adaptive_avg_pool2d(x, image_size)
        x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    return Prepared(x.contiguous(), y, torch.arange(min(eval_size, len(y))), dataset.classes)


@lru_cache(maxsize=4)
def prepare_test(data: str, image_size: int, train_size: int, test_size: int
                 ) -> tuple[Tensor, Tensor]:
    """The first ``test_size`` test examples, preprocessed as :func:`prepare_data` does the
    training subset (standardised; downsampled ones with the downsampled subset's statistics)."""
    dataset = load(data)
    count = min(test_size, len(dataset.y_test))
    x, y = next(dataset.test_batches(batch=count))
    if image_size and image_size != x.shape[-1]:
        n = len(dataset.y_train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        if train_size:
            order = order[:min(train_size, n)]
        pooled = F.adaptive_avg_pool2d(dataset.train_batch(order)[0], image_size)
        mean = pooled.mean(dim=(0, 2, 3), keepdim=True)
        std = pooled.std(dim=(0, 2, 3), keepdim=True)
        x = (F.adaptive_avg_pool2d(x, image_size) - mean) / std
    return x.contiguous(), y


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch intra-op threads (None: leave as is); restored afterwards."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(check_int("threads", count, minimum=1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_threads(device: str | torch.device) -> int | None:
    """Intra-op threads for a CPU run: ``$COMPSDE_THREADS``, else 1 (None on a GPU).

    One thread is the robust choice on a shared 2-core machine: with two threads a busy machine
    made a ResNet step about 10× slower (OpenMP threads wait on each other), while on an idle
    one a second thread saves well under half of a step at these model sizes.
    """
    if torch.device(device).type != "cpu":
        return None
    return check_int("COMPSDE_THREADS", os.environ.get("COMPSDE_THREADS", 1), minimum=1)


def train(spec: TrainSpec, *, device: str | torch.device = "cpu", progress: bool = False,
          grads: str = "vmap", threads: int | None = -1) -> dict[str, Any]:
    """Run one training run (module docstring); returns the JSON result stored in the cache.

    ``threads``: torch intra-op threads during the run (default :func:`default_threads`).

    Result keys: ``steps`` and ``loss`` (the recorded training loss; ``None`` after a
    divergence), ``test_accuracy`` (with ``test_size``: at the same steps, ``None`` after a
    divergence), ``final_loss`` (mean of the last half of the records), ``diverged``,
    ``dimension`` (d), ``omega`` (ω of the method's compressor, None for sign), ``sharpness``
    (when asked), ``seconds``.
    """
    if grads not in ("vmap", "loop"):
        raise ValueError(f"grads must be one of vmap, loop; got {grads!r}")
    with intra_op_threads(default_threads(device) if threads == -1 else threads):
        return _train(spec, device, progress, grads)


def _train(spec: TrainSpec, device: str | torch.device, progress: bool,
           grads: str) -> dict[str, Any]:
    from ..nn import make_model
    from ..progress import progress_bar

    started = time.perf_counter()
    data = prepare_data(spec.data, spec.image_size, spec.train_size, spec.eval_size)
    x_all, y_all = data.x.to(device), data.y.to(device)
    x_eval, y_eval = x_all[data.eval_index.to(device)], y_all[data.eval_index.to(device)]
    model = make_model(spec.model, data.image_shape, data.classes, seed=spec.seed, device=device)
    flat = FlatModel(model)
    theta = flat.theta0.clone()
    method = methods.make(spec.method)
    omega = method.omegas(spec.agents, flat.dim)
    state = (method.initial_state((spec.agents, flat.dim), theta.dtype, device)
             if method.stateful else None)
    if spec.test_size:
        x_test, y_test = (t.to(device) for t in prepare_test(
            spec.data, spec.image_size, spec.train_size, spec.test_size))
    gen_data = torch.Generator(device).manual_seed(stream_seed(spec.seed, "data"))
    gen_noise = torch.Generator(device).manual_seed(stream_seed(spec.seed, "noise"))
    gen_comp = torch.Generator(device).manual_seed(stream_seed(spec.seed, "compress"))
    scale = spec.noise / math.sqrt(spec.batch)
    heavy = noise_law(f"student-t:nu={spec.noise_nu:g},scale=1") if spec.noise_nu else None
    limit = MAX_SAMPLES[torch.device(device).type == "cpu"]
    if grads == "vmap":
        def agent_grads(th: Tensor, x: Tensor, y: Tensor) -> Tensor:
            return flat.agent_grads(th, x, y, limit)
    else:
        agent_grads = flat.agent_grads_loop
    n = len(y_all)

    record_steps = sorted(set(range(0, spec.steps + 1, spec.eval_every)) | {spec.steps})
    losses: list[float | None] = [None] * len(record_steps)
    losses[0] = flat.eval_loss(theta, x_eval, y_eval)
    accuracies: list[float | None] = [None] * len(record_steps)
    if spec.test_size:
        accuracies[0] = flat.accuracy(theta, x_test, y_test)
    diverged = not math.isfinite(losses[0])
    slot = 1
    bar = progress_bar(spec.steps, desc=f"{spec.method} B={spec.batch} N={spec.agents}",
                       enabled=progress, unit="step")
    for step in range(1, spec.steps + 1):
        if diverged:
            break
        index = torch.randint(n, (spec.agents, spec.batch), generator=gen_data, device=device)
        g = agent_grads(theta, x_all[index], y_all[index])
        if scale > 0 and heavy is not None:
            g.add_(heavy.sample(g.shape, gen_noise, dtype=g.dtype, device=device), alpha=scale)
        elif scale > 0:
            g.add_(torch.randn(g.shape, generator=gen_noise, device=device), alpha=scale)
        if state is None:
            theta.sub_(method.direction(g, gen_comp), alpha=spec.lr)
        else:
            theta.sub_(method.step(g, state, gen_comp), alpha=spec.lr)
        if step == record_steps[slot]:
            value = flat.eval_loss(theta, x_eval, y_eval)
            if not math.isfinite(value) or value > DIVERGED_LOSS:
                diverged = True
            else:
                losses[slot] = value
                if spec.test_size:
                    accuracies[slot] = flat.accuracy(theta, x_test, y_test)
            slot += 1
        bar.update(1)
    bar.close()
    recorded = [v for v in losses if v is not None]
    tail = max(1, round(len(losses) * TAIL))
    final = float(np.mean(losses[-tail:])) if not diverged else None
    result: dict[str, Any] = {
        "steps": record_steps, "loss": losses, "final_loss": final, "diverged": diverged,
        "dimension": flat.dim, "omega": None if omega is None else float(np.mean(omega)),
        "records": len(recorded),
    }
    if spec.test_size:
        result["test_accuracy"] = accuracies
    if spec.sharpness_iters and not diverged:
        gen = torch.Generator(device).manual_seed(stream_seed(spec.seed, "sharpness"))
        result["sharpness"] = sharpness(flat, theta, x_eval, y_eval, spec.sharpness_iters, gen)
    result["seconds"] = time.perf_counter() - started
    return result


def default_device() -> str:
    """``cuda`` when a GPU is present (the ``--full`` presets), else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"
