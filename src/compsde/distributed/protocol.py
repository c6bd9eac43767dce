"""The state shared by the DDP hook and the in-process simulation of N agents.

:class:`Protocol` holds what defines a run of DSGD, DCSGD or DSignSGD on real gradients
(THEORY.md §2): the method and its compressor, the ``seed``, the ``step`` counter, the options
of the wire, optional injected gradient noise (THEORY.md §1, ``g_i = ∇f + Z_i``), the policy for
non-finite gradients, and exact byte counters. It never touches torch's global RNG: every draw
comes from a generator keyed by ``(seed, step, bucket[, rank])`` (:mod:`.wire`).

A ``stateful`` method keeps per-rank state buffers of every bucket here, chosen by its
capabilities (:mod:`.state_buffers`), carried parameter by parameter across DDP bucket rebuilds
and checkpointed with the rest (:attr:`Protocol.state_bytes` counts them; THEORY.md §8, §8b):

- Signum (``feedback`` None): the momentum ``m ← βm + (1 − β)g``; the rank encodes ``m``.
- EF-signSGD (``feedback`` "error"): the error ``e``; the rank encodes ``p = g + e`` with the
  scaled sign (scale ``‖p‖₁/d`` of the bucket) and keeps ``e ← p − Δ``, ``Δ`` its own message
  as every rank decodes it; the decoded result is ``mean_i Δ_i``.
- EF21 (``feedback`` "ef21"): ``h`` and the copy ``ĥ`` of the server's ``mean_i h_i``; the rank
  encodes ``v = g − h`` with the compressor, ``c = C'(v)`` (``C/(1 + ω(d))`` when unbiased, d
  the bucket's size), keeps ``h ← h + c`` from its own message as decoded, ``ĥ ← ĥ + mean_i c_i``
  from the collective, and the decoded result is ``ĥ``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from .. import methods
from .. import noise as noise_module
from .._checks import check_choice, check_int
from ..methods import Method
from ..noise import NoiseLaw
from .codecs import BucketKey, Codec, make_codec
from .state_buffers import StateBuffers, buffer_names
from .wire import AUTO_SIGN_WIRES, allreduce_bytes, derive_seed

SIGN_WIRES = ("auto", "bits", "int8", "scatter", "digits")
RANDOMNESS = ("shared", "independent")
ON_NONFINITE = ("raise", "skip")
_NOISE_STREAM = 1   # keeps injected noise apart from compressor randomness


class NonFiniteGradientError(FloatingPointError):
    """A rank's gradient held NaN or ±inf at ``step``; raised on every rank at once."""

    def __init__(self, step: int, bucket: int, ranks: int):
        who = "the averaged gradient" if ranks < 0 else f"{ranks} rank(s)'s gradient"
        super().__init__(f"non-finite gradient at step {step}: {who} in bucket {bucket} held "
                         f"NaN or inf (lower --lr, clip, or use --on-nonfinite skip)")
        self.step, self.bucket, self.ranks = step, bucket, ranks


def resolve_method(method: Method | str) -> Method:
    """A :class:`Method` from a spec; per-agent compressor lists are not supported here."""
    if isinstance(method, str):
        method = methods.make(method)
    if not isinstance(method, Method):
        raise ValueError(f"method must be a spec such as 'dsgd', 'dsignsgd' or "
                         f"'dcsgd:randk:ratio=0.01', or a Method; got {method!r}")
    if method.agents_fixed is not None:
        raise ValueError("method must use one compressor for every rank in distributed "
                         "training (per-agent compressor lists are simulation-only)")
    return method


def rank_noise(law: NoiseLaw | str | None, rank: int, world: int) -> NoiseLaw | None:
    """The noise law of ``rank``: a scalar scale, or the rank's entry of a per-agent scale."""
    if law is None:
        return None
    if isinstance(law, str):
        law = noise_module.make(law)
    scale = law.scale
    if scale.dim() == 0:
        return law
    if scale.dim() == 1 and scale.numel() == world:
        return law.with_scale(scale[rank].clone())
    raise ValueError(f"noise scale must be one number or one per rank ({world} values, e.g. "
                     f"scale=1/2), got {law.spec}")


class Protocol(StateBuffers):
    """Method, seed, step, wire options, noise, non-finite policy and byte counters.

    Args:
        method: ``"dsgd"``, ``"dsignsgd"``, ``"dcsgd:<compressor>"`` or a :class:`Method`.
        seed: key of all randomness (compressor coordinates/rounding, injected noise).
        world: number of ranks (or simulated agents) N.
        noise: optional law of noise added to each rank's bucket gradient before it is encoded
            (e.g. ``"student-t:nu=1,scale=0.01"``), drawn from ``(seed, step, bucket, rank)``;
            the scale is used as given (no batch division).
        sign_wire: DSignSGD's wire: ``"bits"`` (all-gather of packed signs), ``"int8"``
            (uint8 sum-allreduce), ``"scatter"`` (sign reduce-scatter: all-to-all of packed
            signs, the packed counts to every rank) or ``"auto"``, per bucket the one moving the
            fewest bytes (:func:`.wire.best_sign_wire`; ``bits`` up to N = 4, then
            ``scatter``). All give bitwise the same mean of signs.
        randomness: Rand-k/Bernoulli coordinates ``"shared"`` by all ranks (one allreduce of
            the kept values) or ``"independent"`` per rank (THEORY.md's setting; all-gather).
        on_nonfinite: ``"raise"`` :class:`NonFiniteGradientError` on every rank, or ``"skip"``:
            zero the averaged gradient and set :attr:`skipped` so the caller skips the step.
    """

    def __init__(self, method: Method | str, seed: int = 0, world: int = 1, rank: int = 0, *,
                 noise: NoiseLaw | str | None = None, sign_wire: str = "auto",
                 randomness: str = "shared", on_nonfinite: str = "raise"):
        self.method = resolve_method(method)
        self.seed = check_int("seed", seed, minimum=0)
        self.world = check_int("world", world, minimum=1)
        self.rank = check_int("rank", rank, minimum=0, maximum=self.world - 1)
        self.sign_wire = check_choice("sign_wire", sign_wire, SIGN_WIRES)
        self.randomness = check_choice("randomness", randomness, RANDOMNESS)
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ON_NONFINITE)
        self.method.check_agents(self.world)       # a majority vote needs N >= 2
        self.buffer_names = buffer_names(self.method)
        if self.method.stateful and self.on_nonfinite == "skip":
            raise ValueError(f"on_nonfinite 'skip' is not supported by {self.method.spec}: a "
                             f"non-finite gradient would stay in its state "
                             f"({', '.join(self.buffer_names)}) after the skipped step; use "
                             f"on_nonfinite='raise'")
        if self.method.server == "vote" and sign_wire == "digits":
            raise ValueError("sign_wire 'digits' carries counts; the majority vote of "
                             f"{self.method.spec} sends 1 or 2 bits on sign_wire 'scatter'")
        if self.signs and sign_wire == "int8" and self.world > 255:
            raise ValueError(f"sign_wire 'int8' supports at most 255 ranks, got {self.world}")
        self.noise_spec = None if noise is None else (
            noise if isinstance(noise, str) else noise.spec)
        self._noise_law = noise if isinstance(noise, NoiseLaw) else (
            noise_module.make(noise) if noise else None)
        self._noise_cache: dict[int, NoiseLaw | None] = {}
        if self._noise_law is not None:
            rank_noise(self._noise_law, 0, self.world)      # validate the scale now
        self.step = 0
        self.bytes_sent = 0.0
        self.bytes_received = 0.0
        self.bytes_fp32_allreduce = 0.0
        self.payload_bytes = 0
        self.codec_seconds = 0.0     # wall time in encode/reduce/decode (not checkpointed)
        self.skipped = False
        self.skipped_steps: list[int] = []
        self._codecs: dict[int, Codec] = {}
        self._init_buffers()

    auto_sign_wires = AUTO_SIGN_WIRES      # what sign_wire="auto" chooses among

    # -- properties ---------------------------------------------------------------------------
    @property
    def compressor(self):
        """The compressor every rank applies (identity for DSGD, sign for DSignSGD)."""
        return self.method.compressor

    @property
    def method_spec(self) -> str:
        return self.method.spec

    @property
    def signs(self) -> bool:
        """Whether the ranks send signs (DSignSGD, its vote, Signum): the sign wires."""
        return self.method.compressor.name == "sign"

    def counters(self) -> dict[str, float]:
        """Cumulative bytes of this rank: sent, received, payload, and fp32 allreduce's."""
        return {"bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "payload_bytes": self.payload_bytes,
                "bytes_fp32_allreduce": self.bytes_fp32_allreduce}

    # -- per bucket ---------------------------------------------------------------------------
    def codec(self, bucket: int, grad: Tensor) -> Codec:
        """The codec of ``bucket`` for a flat gradient like ``grad`` (rebuilt on change)."""
        codec = self._codecs.get(bucket)
        d = grad.numel()
        if (codec is None or codec.d != d or codec.dtype != grad.dtype
                or codec.device != grad.device):
            codec = self._codecs[bucket] = make_codec(
                self.method.name, self.compressor, d=d, world=self.world, dtype=grad.dtype,
                device=grad.device, bucket=bucket, sign_wire=self.sign_wire,
                randomness=self.randomness, vote=self.method.server == "vote",
                auto_wires=self.auto_sign_wires)
        return codec

    def inject_noise(self, grad: Tensor, key: BucketKey) -> None:
        """Add rank ``key.rank``'s noise ``Z`` to ``grad`` in place (no-op without noise)."""
        if self._noise_law is None:
            return
        law = self._noise_cache.get(key.rank)
        if law is None:
            law = self._noise_cache[key.rank] = rank_noise(self._noise_law, key.rank,
                                                           self.world)
        gen = torch.Generator(device=grad.device)
        gen.manual_seed(derive_seed(key.seed, key.step, key.bucket, key.rank, _NOISE_STREAM))
        grad.add_(law.sample((1, grad.numel()), gen, dtype=grad.dtype,
                             device=grad.device).view_as(grad))

    def prepare(self, grad: Tensor, key: BucketKey, codec: Codec) -> Tensor:
        """Noise, finiteness flag and encoding of one rank's bucket gradient (its payload);
        a stateful method's buffers are updated here (module docstring). ``grad`` may be
        consumed."""
        self.inject_noise(grad, key)
        feedback = self.method.feedback
        if feedback == "error":                # EF-signSGD: send Δ = C(g + e), keep p − Δ
            corrected = self.buffer_for("error", key, grad).add_(grad)
            with self._codec_timer():
                payload = codec.encode_checked(corrected, key)
                corrected.sub_(codec.own_message(payload, key))
            return payload
        if feedback == "ef21":                 # EF21: send C'(g − h), keep h + C'(g − h)
            h = self.buffer_for("ef21_h", key, grad)
            if key.rank == self.rank:          # ĥ is looked up again by finish
                self.buffer_for("ef21_mean", key, grad)
            diff = grad.sub_(h)
            with self._codec_timer():
                if codec.lossless:             # the message is diff itself (identity)
                    h.add_(diff)
                    return codec.encode_checked(diff, key)
                payload = codec.encode_checked(diff, key)
                own = codec.own_message(payload, key)
                divisor = self.method.divisor(codec.d)
                if divisor is not None:
                    own.div_(divisor)
                h.add_(own)
            return payload
        if self.method.stateful:               # Signum: the rank sends sign(m), m its momentum
            beta = self.method.beta
            grad = self.momentum_for(key, grad).mul_(beta).add_(grad, alpha=1.0 - beta)
        with self._codec_timer():
            return codec.encode_checked(grad, key)

    def count_shard(self, codec: Codec, received: Tensor) -> Tensor:
        """The sign reduce-scatter's middle step (:meth:`.sign_codecs.SignScatterCodec.reduce`),
        timed with the codec."""
        with self._codec_timer():
            return codec.reduce(received)

    @contextmanager
    def _codec_timer(self) -> Iterator[None]:
        """Add the wall time of the block to :attr:`codec_seconds`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.codec_seconds += time.perf_counter() - started

    def account(self, codec: Codec, payload: Tensor) -> None:
        """Add one bucket's traffic to the counters (module docstring of :mod:`.wire`)."""
        nbytes, moved = codec.traffic(payload)
        self.payload_bytes += nbytes
        self.bytes_sent += moved
        self.bytes_received += moved
        self.bytes_fp32_allreduce += allreduce_bytes(4 * codec.d, self.world)

    def finish(self, codec: Codec, combined: Tensor, key: BucketKey, out: Tensor) -> Tensor:
        """Decode into ``out`` and apply the non-finite policy (same outcome on every rank)."""
        with self._codec_timer():
            bad = codec.decode(combined, key, out)
        if bad:
            if self.on_nonfinite == "raise":
                raise NonFiniteGradientError(key.step, key.bucket,
                                             -1 if not codec.checks_locally else bad)
            self.skipped = True
            if not self.skipped_steps or self.skipped_steps[-1] != key.step:
                self.skipped_steps.append(key.step)
            out.zero_()
        elif self.method.feedback == "ef21":  # out = mean_i C(v_i): ĥ ← ĥ + mean_i c_i
            divisor = self.method.divisor(codec.d)
            if divisor is not None:
                out.div_(divisor)
            mean = self.buffers["ef21_mean"][(key.bucket, key.rank)][1]
            out.copy_(mean.add_(out))
        return out

    def begin_step(self) -> None:
        """Reset the per-step skip flag (called before the first bucket of a step)."""
        self.skipped = False

    # -- checkpoints --------------------------------------------------------------------------
    _PICKLED = ("seed", "world", "rank", "sign_wire", "randomness", "on_nonfinite",
                "noise_spec", "step", "bytes_sent", "bytes_received", "bytes_fp32_allreduce",
                "payload_bytes", "skipped_steps")

    def __getstate__(self) -> dict[str, Any]:
        state = {name: copy.copy(getattr(self, name)) for name in self._PICKLED}
        state["method_spec"] = self.method.spec
        for name, held in self.buffers.items():     # Signum: "momentum" (as before)
            state[name] = [(bucket, rank, layout, m.detach().clone())
                           for (bucket, rank), (layout, m) in held.items()]
        return state

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (seed, step, options, counters) as plain values, for a
        framework's checkpointing (Lightning, Accelerate's ``register_for_checkpointing``)."""
        return self.__getstate__()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into this live state: the process group, the rank and
        the model it is registered on stay; the method, the world size and the wire options
        must be those the state was made with (``ValueError`` naming the first that is not)."""
        if not isinstance(state, dict) or "method_spec" not in state:
            raise ValueError(f"state must be a dict from state_dict(), got "
                             f"{type(state).__name__}")
        mine = self.__getstate__()
        for name in ("method_spec", "world", *self._MATCHED):
            if state.get(name, mine[name]) != mine[name]:
                raise ValueError(f"state was made with {name}={state.get(name)!r}, this one "
                                 f"has {mine[name]!r}; register with the same settings")
        for name in self._PICKLED:
            if name in state and name != "rank":
                setattr(self, name, copy.copy(state[name]))
        self._restore_momentum(state)

    _MATCHED = ("sign_wire", "randomness", "on_nonfinite", "noise_spec")

    def __setstate__(self, state: dict[str, Any]) -> None:
        fresh = Protocol.__new__(type(self))
        Protocol.__init__(fresh, state["method_spec"], state["seed"], state["world"],
                          state["rank"], noise=state["noise_spec"],
                          sign_wire=state["sign_wire"], randomness=state["randomness"],
                          on_nonfinite=state["on_nonfinite"])
        self.__dict__.update(fresh.__dict__)
        for name in self._PICKLED:
            if name in state:          # checkpoints from before a counter existed lack it
                setattr(self, name, state[name])
        self._restore_momentum(state)
