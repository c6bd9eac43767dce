"""The units of an FSDP2 model and the step they belong to.

A *unit* is one ``fully_shard`` call: ``fully_shard(block)``, or ``fully_shard([a, b])``, which
groups several modules into one unit (one FSDP state, one parameter group, one reduce-scatter
per backward; Accelerate shards a transformer's embeddings, final norm and head that way).
Nested units (``fully_shard(layer.attn)`` then ``fully_shard(layer)``) are separate units; the
root's unit holds the parameters no other unit took. Each unit is one message of the method,
keyed by its index in :func:`fsdp_units`'s order, which is the same on every rank.

:class:`StepTracker` turns reductions into optimizer steps: a step is complete once every unit
with trainable parameters has reduced exactly once, however many backward passes it took
(``set_requires_gradient_sync(False)`` on micro-steps reduces nothing). A unit reducing twice
in one step, or a backward pass ending with some units reduced and others not, is a
``RuntimeError`` naming the units: either would reuse a key ``(seed, step, unit)``, and Rand-k
would keep the same coordinates step after step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.distributed.fsdp import FSDPModule


@dataclass(frozen=True)
class Unit:
    """One ``fully_shard`` unit: its modules' names, a module to set its comms on, and its
    (single) parameter group."""

    index: int
    name: str
    module: FSDPModule
    group: object           # torch's FSDPParamGroup
    trainable: bool


def fsdp_units(model: nn.Module) -> list[Unit]:
    """The units of ``model`` that own parameters, in ``model.modules()`` order; a unit with
    several parameter groups (per-parameter meshes via ``shard_placement_fn``) is a
    ``ValueError``: one custom reduce-scatter cannot serve several meshes."""
    names = {id(m): n or "<root>" for n, m in model.named_modules()}
    units: list[Unit] = []
    seen: set[int] = set()
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        state = module._get_fsdp_state()
        if id(state) in seen:
            continue
        seen.add(id(state))
        groups = state._fsdp_param_groups
        if not groups:
            continue
        label = "+".join(names.get(id(m), type(m).__name__) for m in state._modules)
        if len(groups) > 1:
            raise ValueError(f"model: unit {label} has {len(groups)} parameter groups "
                             f"(per-parameter meshes via shard_placement_fn); the methods "
                             f"need one mesh per unit")
        group = groups[0]
        trainable = any(p.sharded_param.requires_grad for p in group.fsdp_params)
        units.append(Unit(len(units), label, module, group, trainable))
    return units


def unmanaged_parameters(model: nn.Module, units: list[Unit]) -> list[str]:
    """Names of trainable parameters of ``model`` that no unit manages (ignored parameters, or
    parameters outside every ``fully_shard`` call): FSDP reduces none of their gradients."""
    managed = {id(p.sharded_param) for unit in units for p in unit.group.fsdp_params}
    return [name for name, p in model.named_parameters()
            if p.requires_grad and id(p) not in managed]


class StepTracker:
    """Which units have reduced in the current step (module docstring)."""

    def __init__(self, units: list[Unit] | None = None):
        self.names: list[str] = []
        self.expected: frozenset[int] = frozenset()
        self.reduced: set[int] = set()
        self._check_queued = False
        if units is not None:
            self.bind(units)

    def bind(self, units: list[Unit]) -> None:
        self.names = [unit.name for unit in units]
        self.expected = frozenset(unit.index for unit in units if unit.trainable)
        self.reduced = set()

    def begin(self, unit: int, step: int) -> bool:
        """Record that ``unit`` starts reducing in ``step``; True when it is the step's first."""
        if unit in self.reduced:
            raise RuntimeError(
                f"FSDP unit {self.names[unit]} reduced twice in step {step} while "
                f"{self._missing()} had not reduced; a step must reduce every unit once "
                f"(for gradient accumulation call set_requires_gradient_sync(False) on the "
                f"micro-steps)")
        first = not self.reduced
        if first:
            self._queue_check(step)
        return first

    def done(self, unit: int) -> bool:
        """Record that ``unit`` has reduced; True when that completes the step."""
        self.reduced.add(unit)
        if self.reduced >= self.expected:
            self.reduced.clear()
            return True
        return False

    def _missing(self) -> str:
        missing = sorted(self.expected - self.reduced)
        return ", ".join(self.names[i] for i in missing) or "no unit"

    def _queue_check(self, step: int) -> None:
        """At the end of the current backward pass, check that the step is complete."""
        from torch.autograd import Variable

        if self._check_queued:
            return
        try:
            Variable._execution_engine.queue_callback(self._checker(step))
            self._check_queued = True
        except RuntimeError:        # not inside a backward pass (a direct call): no check
            pass

    def _checker(self, step: int) -> Callable[[], None]:
        def check() -> None:
            self._check_queued = False
            if self.reduced:
                left = self._missing()
                self.reduced.clear()
                raise RuntimeError(
                    f"step {step} ended with FSDP units {left} not reduced (their parameters "
                    f"got no gradient in this backward pass); every trainable unit must take "
                    f"part in every step — freeze unused parameters (requires_grad=False) "
                    f"before register()")
        return check
