"""DSGD, DCSGD or DSignSGD (THEORY.md §2) in a Lightning ``Trainer``: one callback.

``Trainer(callbacks=[Compression("dsignsgd", seed=0)], strategy="ddp", ...)`` registers the
method on the model once the strategy has wrapped it, so the Trainer's optimizer step performs
``x ← x − η · mean_i m_i`` (:func:`compsde.distributed.register`). Supported strategies:
``DDPStrategy`` (``"ddp"``, ``"ddp_spawn"``, …; CPU/gloo and CUDA/NCCL alike) and
``ModelParallelStrategy`` with the LightningModule sharded by ``fully_shard`` in
``configure_model`` (FSDP2). Every ``log_every_n_steps`` the callback sends the state's counters
to the Trainer's loggers as exact numbers (``compsde/step``, ``compsde/bytes_sent``, …,
``compsde/ratio`` = bytes sent / the fp32 collective's), and a checkpoint keeps the state
(seed, step, counters) under ``"compsde"``, so a run resumed with ``ckpt_path`` continues the
same method bitwise.

Under DDP, the first batch of every ``fit`` is also run once without a step (gradients passed
through, logging muted, :func:`compsde.distributed.prime_buckets`) so that DDP settles its
bucket layout before the first real step: a resumed run then forms the same messages as an
uninterrupted one (THEORY.md §2's buckets). ``prime=False`` skips it; manual optimisation
never primes.

Lightning Fabric needs no callback: ``compsde.distributed.register(model, "dsignsgd")`` on the
model ``fabric.setup`` returns, and ``fabric.save(path, {..., "compsde": state})``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    ModelParallelStrategy,
    SingleDeviceStrategy,
    Strategy,
)
from torch import Tensor, nn

from .distributed import prime_buckets, register
from .distributed.frameworks import HOW_TO_START
from .distributed.protocol import Protocol, resolve_method

CHECKPOINT_KEY = "compsde"
SUPPORTED_STRATEGIES = ("DDPStrategy ('ddp', 'ddp_spawn', 'ddp_fork', 'ddp_notebook') or "
                        "ModelParallelStrategy with fully_shard in configure_model (FSDP2)")


def _option_names() -> tuple[str, ...]:
    """The keyword-only options of :func:`compsde.distributed.register`."""
    return tuple(name for name, p in inspect.signature(register).parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY)


def check_strategy(strategy: Strategy) -> None:
    """``ValueError`` unless ``strategy`` is data-parallel in a way compsde supports."""
    name = type(strategy).__name__
    if isinstance(strategy, DeepSpeedStrategy):          # a subclass of DDPStrategy
        raise ValueError(f"strategy: DeepSpeedStrategy reduces gradients inside DeepSpeed's "
                         f"engine, out of compsde's reach; use {SUPPORTED_STRATEGIES}")
    if isinstance(strategy, (DDPStrategy, ModelParallelStrategy)):
        return
    if isinstance(strategy, SingleDeviceStrategy):
        raise ValueError(f"strategy: {name} runs one process, so there is nothing to "
                         f"compress; {HOW_TO_START}")
    if isinstance(strategy, FSDPStrategy):
        raise ValueError(f"strategy: FSDPStrategy shards with FSDP1, which has no custom "
                         f"reduce-scatter; use {SUPPORTED_STRATEGIES}")
    raise ValueError(f"strategy must be {SUPPORTED_STRATEGIES}, got {name}")


def optimizer_note(optimizers: list[torch.optim.Optimizer]) -> str:
    """Why the optimizer step is not exactly the method's ``x ← x − η · mean_i m_i``
    (THEORY.md §2): anything but plain SGD (momentum, weight decay, another optimizer) still
    receives the method's averaged message, but steps with it differently. Empty if plain."""
    for optimizer in optimizers:
        if type(optimizer) is not torch.optim.SGD:
            return (f"optimizer {type(optimizer).__name__} steps with the method's averaged "
                    f"message in its own way; the step is the method's own only with plain "
                    f"torch.optim.SGD")
        for group in optimizer.param_groups:
            extras = [k for k in ("momentum", "weight_decay", "dampening")
                      if group.get(k, 0)] + (["nesterov"] if group.get("nesterov") else [])
            if extras:
                return (f"optimizer SGD with {', '.join(extras)} steps with the method's "
                        f"averaged message in its own way; the step is the method's own only "
                        f"with plain SGD")
    return ""


def sharded_root(model: nn.Module) -> nn.Module:
    """What to register on: ``model`` itself when it is the DDP or FSDP2 module, else (under
    ``ModelParallelStrategy``, which leaves the LightningModule unwrapped) the one outermost
    ``fully_shard`` module inside it, which must hold every trainable parameter (Lightning's
    pattern: the layers, then ``self.model``, sharded in ``configure_model``)."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, (FSDPModule, nn.parallel.DistributedDataParallel)):
        return model
    roots: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, FSDPModule):
                roots.append((prefix + name, child))
            else:
                visit(f"{prefix}{name}.", child)

    visit("", model)
    if not roots:
        return model                  # register names what it got
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if len(roots) == 1 and trainable <= {id(p) for p in roots[0][1].parameters()}:
        return roots[0][1]
    names = ", ".join(name for name, _ in roots)
    found = (f"the one outermost fully_shard module, {names}, leaves trainable parameters of "
             f"{type(model).__name__} outside it" if len(roots) == 1 else
             f"found {len(roots)} outermost fully_shard modules: {names}")
    raise ValueError(f"model: shard one module that holds every trainable parameter (in "
                     f"configure_model: fully_shard each layer, then fully_shard(self.model)); "
                     f"{found}")


class Compression(Callback):
    """Run ``method`` as the Trainer's gradient reduction (module docstring).

    Args:
        method: ``"dsgd"``, ``"dsignsgd"`` or ``"dcsgd:<compressor>"`` (e.g.
            ``"dcsgd:randk:ratio=0.1"``), or a :class:`~compsde.methods.Method`.
        seed: key of the shared randomness ``(seed, step, bucket)``.
        prime: under DDP, settle the bucket layout on the first batch (module docstring).
        **options: ``noise``, ``sign_wire``, ``randomness``, ``on_nonfinite`` of
            :func:`compsde.distributed.register`.

    A bad method, option or strategy is a ``ValueError`` before the first step. After ``fit``
    starts, :attr:`state` is the rank's :class:`~compsde.distributed.HookState` (DDP) or
    :class:`~compsde.distributed.FSDPState` (FSDP2).
    """

    def __init__(self, method: Any, *, seed: int = 0, prime: bool = True, **options: Any):
        allowed = _option_names()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"options: unknown {', '.join(unknown)}; allowed: "
                             f"{', '.join(allowed)}")
        if not isinstance(prime, bool):
            raise ValueError(f"prime must be True or False, got {prime!r}")
        self.method = resolve_method(method)
        checked = {k: v for k, v in options.items() if k in inspect.signature(Protocol).parameters}
        Protocol(self.method, seed, 1, 0, **checked)          # the options, checked now
        self.seed, self.prime, self.options = seed, prime, options
        self.state: Any = None
        self._loaded: dict[str, Any] | None = None
        self._primed = False
        self._logged_step = -1

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            check_strategy(trainer.strategy)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a second fit of the same Trainer continues the live state on the new wrapper
        method = self.state if self.state is not None else self.method
        self.state = register(sharded_root(trainer.strategy.model), method, self.seed,
                              **self.options)
        if self._loaded is not None:
            self.state.load_state_dict(self._loaded)
            self._loaded = None
        self._primed = False
        note = optimizer_note(trainer.optimizers)
        if note:
            warnings.warn(note, stacklevel=2)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._primed:
            return
        self._primed = True
        model = sharded_root(trainer.strategy.model)
        if (self.prime and pl_module.automatic_optimization
                and isinstance(model, nn.parallel.DistributedDataParallel)):
            _prime_with_training_step(model, self.state, pl_module, batch, batch_idx)

    # -- logging --------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """The state's step and byte counters (``compsde/…``), and ``compsde/ratio``: bytes
        sent over those of the fp32 collective the method replaces."""
        if self.state is None:
            return {}
        counters = self.state.counters()
        baseline = counters.get("bytes_fp32_reduce_scatter", counters["bytes_fp32_allreduce"])
        found = {f"compsde/{name}": float(value) for name, value in counters.items()}
        found["compsde/step"] = float(self.state.step)
        found["compsde/ratio"] = counters["bytes_sent"] / baseline if baseline else 0.0
        return found

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if (self.state is None or step == self._logged_step
                or step % max(1, trainer.log_every_n_steps)):
            return
        self._logged_step = step
        metrics = self.metrics()
        for logger in trainer.loggers:         # at the index Lightning logs this step's metrics
            logger.log_metrics(metrics, step=step - 1)

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.state is not None:
            checkpoint[CHECKPOINT_KEY] = self.state.state_dict()

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            warnings.warn("the checkpoint holds no compsde state; the method's step and byte "
                          "counters start at 0", stacklevel=2)
        elif self.state is not None:       # strategies that restore after set-up (FSDP2)
            self.state.load_state_dict(saved)
        else:                              # DDP restores before on_fit_start registers
            self._loaded = saved


def _prime_with_training_step(ddp: nn.parallel.DistributedDataParallel, state: Any,
                              pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
    """:func:`~compsde.distributed.prime_buckets` on ``training_step(batch, batch_idx)``'s loss:
    the module's ``forward`` is redirected to the training step for one call (as Lightning's
    strategies do) and ``log``/``log_dict`` are muted meanwhile."""
    forward = pl_module.forward
    patched = ("forward", "log", "log_dict")
    before = {name: vars(pl_module)[name] for name in patched if name in vars(pl_module)}

    def step_loss(*args: Any) -> Tensor:
        pl_module.forward = forward        # the training step may call forward itself
        out = pl_module.training_step(*args)
        loss = out.get("loss") if isinstance(out, Mapping) else out
        if not isinstance(loss, Tensor):
            raise ValueError("prime: training_step returned no loss to prime DDP's buckets "
                             "with; pass Compression(..., prime=False)")
        return loss

    pl_module.forward = step_loss
    pl_module.log = pl_module.log_dict = lambda *args, **kwargs: None
    try:
        prime_buckets(ddp, state, batch, batch_idx)
    finally:
        for name in patched:
            vars(pl_module).pop(name, None)
        vars(pl_module).update(before)
