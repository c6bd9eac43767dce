"""Per-rank state buffers of a stateful method in distributed training (THEORY.md §8, §8b).

A ``stateful`` method keeps, per bucket and rank, the buffers its capabilities name
(:func:`buffer_names`): Signum's momentum, EF-signSGD's error, EF21's ``h`` and ``ĥ``.
:class:`StateBuffers` (a base of :class:`.protocol.Protocol`) holds them, zeros on first use,
carries them parameter by parameter across DDP bucket rebuilds (the bucket's layout, from
:meth:`StateBuffers.set_layout`), counts their bytes and restores them from a checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..methods import Method
from .codecs import BucketKey

FEEDBACKS = (None, "error", "ef21")


def buffer_names(method: Method) -> tuple[str, ...]:
    """The per-rank state buffers ``method`` keeps in distributed training, read from its
    capabilities (``feedback``, ``stateful``, ``state_buffers``): Signum's momentum, EF-signSGD's
    error, EF21's ``h`` and ``ĥ = mean_i h_i`` (module docstring); ``()`` when stateless."""
    if method.feedback == "error":
        names: tuple[str, ...] = ("error",)
    elif method.feedback == "ef21":
        names = ("ef21_h", "ef21_mean")
    elif method.feedback is not None:
        raise ValueError(f"method {method.spec} has feedback {method.feedback!r}; distributed "
                         f"training supports feedback {', '.join(map(str, FEEDBACKS))}")
    elif not method.stateful:
        names = ()
    elif getattr(method, "beta", None) is not None:
        names = ("momentum",)
    else:
        raise ValueError(f"method {method.spec} keeps a state distributed training does not "
                         f"know (a momentum with beta, or feedback 'error'/'ef21')")
    if len(names) != method.state_buffers:
        raise ValueError(f"method {method.spec} declares state_buffers={method.state_buffers} "
                         f"but its feedback {method.feedback!r} keeps {len(names)}")
    return names



class StateBuffers:
    """The buffers of :func:`buffer_names` for every ``(bucket, rank)``; the subclass sets
    ``method`` and ``buffer_names`` and calls :meth:`_init_buffers`."""

    method: Method
    buffer_names: tuple[str, ...]

    def _init_buffers(self) -> None:
        # buffer name -> (bucket, rank) -> (layout, buffer); layout as in set_layout; retired:
        # pre-rebuild buffers (rank, layout, buffer) still to carry over
        self.buffers: dict[str, dict[tuple[int, int], tuple[tuple | None, Tensor]]] = {
            name: {} for name in self.buffer_names}
        self._layouts: dict[int, tuple[tuple[str, int], ...]] = {}
        self._retired: dict[str, list[tuple[int, tuple | None, Tensor]]] = {
            name: [] for name in self.buffer_names}

    @property
    def momentum(self) -> dict[tuple[int, int], tuple[tuple | None, Tensor]]:
        """Signum's momenta, ``(bucket, rank) -> (layout, m)`` (empty for other methods)."""
        return self.buffers.get("momentum", {})

    @property
    def state_bytes(self) -> int:
        """Bytes of the method's per-rank state held here: ``state_buffers`` buffers the size
        of the gradients per rank (Signum's momentum, EF-signSGD's error: 1; EF21's ``h`` and
        ``ĥ``: 2 — an :class:`AgentSimulator` holds every agent's ``h`` and one ``ĥ``); 0 for
        stateless methods."""
        return sum(m.numel() * m.element_size() for held in self.buffers.values()
                   for _, m in held.values())

    def set_layout(self, bucket: int, layout: tuple[tuple[str, int], ...]) -> None:
        """``(name, numel)`` of the parameters of ``bucket`` in buffer order: a stateful
        method's buffers follow their parameters when the buckets are rebuilt."""
        self._layouts[bucket] = tuple(layout)

    def momentum_for(self, key: BucketKey, grad: Tensor) -> Tensor:
        """Signum's momentum of rank ``key.rank`` for ``key.bucket`` (:meth:`buffer_for`)."""
        return self.buffer_for("momentum", key, grad)

    def buffer_for(self, name: str, key: BucketKey, grad: Tensor) -> Tensor:
        """State buffer ``name`` of rank ``key.rank`` for ``key.bucket`` (zeros on first use;
        carried over parameter by parameter when the bucket's layout changed)."""
        held_by = self.buffers[name]
        index = (key.bucket, key.rank)
        layout = self._layouts.get(key.bucket)
        if layout is not None and sum(n for _, n in layout) != grad.numel():
            raise ValueError(f"bucket {key.bucket}'s layout holds "
                             f"{sum(n for _, n in layout)} entries but its gradient has "
                             f"{grad.numel()}")
        held = held_by.get(index)
        if held is not None and held[0] == layout and held[1].numel() == grad.numel():
            buf = held[1]
            if buf.dtype != grad.dtype or buf.device != grad.device:
                buf = buf.to(dtype=grad.dtype, device=grad.device)
                held_by[index] = (layout, buf)
            return buf
        if held is not None and (layout is None or held[0] is None):
            raise ValueError(f"bucket {key.bucket} of {self.method.spec} changed size from "
                             f"{held[1].numel()} to {grad.numel()} entries without a layout "
                             f"to carry its {name} buffer over")
        buf = torch.zeros_like(grad)
        retired = self._retired[name]
        if held is not None:
            retired.append((key.rank, held[0], held[1]))   # pre-step values, read-only
        sources = [(old, m) for where, (old, m) in held_by.items()
                   if where[1] == key.rank and where != index]
        sources += [(old, m) for rank, old, m in retired if rank == key.rank]
        pieces: dict[str, Tensor] = {}
        for old, tensor in reversed(sources):          # current buffers win over retired
            offset = 0
            for pname, size in old or ():
                pieces[pname] = tensor[offset:offset + size]
                offset += size
        offset = 0
        for pname, size in layout or ():
            if pname in pieces and pieces[pname].numel() == size:
                buf[offset:offset + size].copy_(pieces[pname].to(buf.device, buf.dtype))
            offset += size
        held_by[index] = (layout, buf)
        covered = {pname for where, (lay, _) in held_by.items()
                   if where[1] == key.rank for pname, _ in lay or ()}
        self._retired[name] = [r for r in retired
                               if r[0] != key.rank or not {n for n, _ in r[1] or ()} <= covered]
        return buf

    def _restore_momentum(self, state: dict[str, Any]) -> None:
        """The state buffers of a stateful method's checkpoint (absent: it has none)."""
        for name in self.buffer_names:
            self.buffers[name] = {(bucket, rank): (layout, m.clone())
                                  for bucket, rank, layout, m in state.get(name, [])}
            self._retired[name] = []
