"""The compressor interface, the wire message, the registry and shared random helpers.

A compressor ``C`` maps a vector ``x ∈ R^d`` to the value the receiver reconstructs (THEORY.md
§1). Every compressor compresses along the last dimension; leading dimensions are a batch whose
rows get independent randomness. ``encode``/``decode`` give the same value through the bytes
that actually travel, and ``wire_bits`` counts them.

Randomness comes only from the ``generator`` passed in (``None`` means torch's default
generator, as for ``torch.rand``). On CPU, bulk random numbers are drawn by a NumPy PCG64
generator seeded with one 63-bit draw from the torch generator (several times faster than torch's
CPU sampler); on other devices torch's own samplers run on the device. Same generator state →
same result, on each device type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_float, check_int
from .._spec import parse_spec, reject_unknown

_SEED_HIGH = 2**63 - 1


@dataclass(eq=False)
class WireMessage:
    """What one agent sends: ``payload`` travels, ``d`` and ``dtype`` both sides know.

    ``payload`` is one flat tensor: ``uint8`` bytes, or values in ``dtype`` for compressors
    whose message is a sub-vector (identity, Rand-k, Bernoulli) so a collective can sum it.
    """

    payload: Tensor
    d: int
    dtype: torch.dtype

    @property
    def bits(self) -> int:
        """Size of the payload on the wire: ``numel · element_size · 8``."""
        return self.payload.numel() * self.payload.element_size() * 8


class Compressor(ABC):
    """A (possibly random) compression operator ``C: R^d → R^d`` (THEORY.md §1).

    Subclasses set ``name`` and ``unbiased`` and implement ``_compress``, ``_encode``,
    ``_decode``, ``wire_bits`` and, where a closed form exists, ``_diag_rank_one``.
    """

    name: ClassVar[str]
    unbiased: ClassVar[bool]
    keys: ClassVar[tuple[str, ...]] = ()
    # dtype of the payload; None means "the dtype of the compressed vector".
    payload_dtype: ClassVar[torch.dtype | None] = torch.uint8

    # -- identity -------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """Canonical spec string; ``make(c.spec)`` rebuilds an equal compressor."""
        options = self._options()
        if not options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in options.items())

    def _options(self) -> dict[str, str]:
        return {}

    def __repr__(self) -> str:
        return f"compressors.make({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Compressor) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    @classmethod
    def from_options(cls, options: dict[str, str]) -> Compressor:
        """Build from the parsed options of a spec (strings); unknown keys raise ValueError."""
        reject_unknown("compressor", cls.name, options, set(cls.keys))
        return cls(**options)

    # -- the operator ---------------------------------------------------------------------
    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``C(x)`` row by row along the last dim; same shape, dtype and device as ``x``."""
        check_vector(x, "x")
        if x.numel() == 0:
            return x.clone()
        return self._compress(x, generator)

    @abstractmethod
    def _compress(self, x: Tensor, generator: torch.Generator | None) -> Tensor: ...

    def omega(self, d: int) -> float | None:
        """Variance parameter ω with ``E‖C(x) − x‖² ≤ ω‖x‖²``; None for biased compressors."""
        check_int("d", d, minimum=1)
        return None

    @property
    def contractive(self) -> bool:
        """Whether :meth:`contraction` has an α: unbiased compressors (as ``C/(1 + ω)``) and
        the biased ones that state their α."""
        return self.unbiased or type(self).contraction is not Compressor.contraction

    def contraction(self, d: int) -> float | None:
        """α of the compressor error feedback applies, ``E‖C'(x) − x‖² ≤ (1 − α)‖x‖²``
        (THEORY.md §8b): an unbiased ``C`` is used as ``C' = C/(1 + ω)``, α = 1/(1 + ω);
        biased compressors state their own α; None when ``C`` is not contractive."""
        omega = self.omega(d)
        return None if omega is None else 1.0 / (1.0 + float(omega))

    # -- moments --------------------------------------------------------------------------
    def covariance_diag_rank_one(self, g: Tensor) -> tuple[Tensor, Tensor]:
        """``Φ(g) = Cov_ξ[C(g)] = Diag(D) + c · g gᵀ``; returns ``(D, c)`` (THEORY.md §1).

        ``D`` has the shape of ``g``; ``c`` is a scalar tensor or has the batch shape. Raises
        NotImplementedError for biased compressors (their moments depend on the noise law).
        """
        check_vector(g, "g")
        return self._diag_rank_one(g)

    def _diag_rank_one(self, g: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            f"compressor {self.name!r} is biased and has no closed-form covariance over its own "
            f"randomness; its message moments depend on the gradient-noise law")

    def covariance(self, g: Tensor) -> Tensor:
        """``Φ(g) = Cov_ξ[C(g)]`` as a dense matrix, shape ``(..., d, d)`` (THEORY.md §1)."""
        diag, c = self.covariance_diag_rank_one(g)
        outer = g.unsqueeze(-1) * g.unsqueeze(-2)
        return torch.diag_embed(diag) + c.reshape(*c.shape, 1, 1) * outer

    # -- the wire -------------------------------------------------------------------------
    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> WireMessage:
        """The message for a 1-D ``x``: ``decode(encode(x, g1), g2) == self(x, g3)`` exactly
        when ``g1``, ``g2``, ``g3`` start in the same state."""
        check_vector(x, "x")
        if x.dim() != 1:
            raise ValueError(f"x must be a 1-D tensor to encode, got shape {tuple(x.shape)}")
        payload = self._encode(x.detach(), generator)
        return WireMessage(payload=payload, d=x.shape[0], dtype=x.dtype)

    @abstractmethod
    def _encode(self, x: Tensor, generator: torch.Generator | None) -> Tensor: ...

    def decode(self, message: WireMessage, generator: torch.Generator | None = None, *,
               out: Tensor | None = None) -> Tensor:
        """Reconstruct ``C(x)`` from ``message``; writes into ``out`` (shape ``(d,)``) if given.

        Only Rand-k and Bernoulli consume ``generator`` (shared-seed index/mask redraw).
        """
        if not isinstance(message, WireMessage):
            raise ValueError(f"message must be a WireMessage, got {type(message).__name__}")
        self._check_payload(message)
        if out is not None:
            check_out(out, message)
        return self._decode(message, generator, out)

    def _check_payload(self, message: WireMessage) -> None:
        payload, d, dtype = message.payload, message.d, message.dtype
        check_int("d", d, minimum=1)
        want_dtype = self.payload_dtype or dtype
        if not isinstance(payload, Tensor) or payload.dtype != want_dtype or payload.dim() != 1:
            got = (f"{payload.dtype} tensor of shape {tuple(payload.shape)}"
                   if isinstance(payload, Tensor) else type(payload).__name__)
            raise ValueError(f"payload must be a 1-D {want_dtype} tensor for {self.name!r}, "
                             f"got {got}")
        want = self.wire_bits(d, dtype)
        if message.bits != want:
            raise ValueError(f"payload must hold {want} bits for {self.name!r} with d={d}, "
                             f"{dtype}; got {message.bits}")

    @abstractmethod
    def _decode(self, message: WireMessage, generator: torch.Generator | None,
                out: Tensor | None) -> Tensor: ...

    @abstractmethod
    def wire_bits(self, d: int, dtype: torch.dtype = torch.float32) -> int:
        """Exact size in bits of ``encode``'s payload for a vector of ``d`` entries."""


# -- registry ------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Compressor]] = {}


def register(cls: type[Compressor]) -> type[Compressor]:
    """Class decorator: make ``cls`` buildable by ``make(cls.name + ...)``."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Registered compressor names, sorted."""
    return sorted(_REGISTRY)


def make(spec: str | Compressor) -> Compressor:
    """Build a compressor from a spec such as ``"randk:ratio=0.1"`` or ``"qsgd:levels=4"``.

    A ``Compressor`` passed in is returned unchanged. Raises ValueError naming the problem
    (unknown name, malformed spec, unknown key, bad value).
    """
    if isinstance(spec, Compressor):
        return spec
    name, options = parse_spec(spec, "compressor")
    check_choice("compressor", name, available())
    return _REGISTRY[name].from_options(options)


# -- shared helpers --------------------------------------------------------------------------
def check_vector(x: Any, name: str) -> None:
    """``x`` must be a floating tensor with at least one dimension and a non-empty last dim."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., d) with d >= 1, got {tuple(x.shape)}")


def check_out(out: Any, message: WireMessage) -> None:
    """``out`` must be a contiguous ``(d,)`` tensor of the message's dtype on its device."""
    if (not isinstance(out, Tensor) or out.shape != (message.d,) or out.dtype != message.dtype
            or out.device != message.payload.device or not out.is_contiguous()):
        got = (f"{out.dtype} tensor of shape {tuple(out.shape)} on {out.device}"
               if isinstance(out, Tensor) else type(out).__name__)
        raise ValueError(f"out must be a contiguous ({message.d},) {message.dtype} tensor on "
                         f"{message.payload.device}, got {got}")


def into(out: Tensor | None, value: Tensor) -> Tensor:
    """Return ``value``, copied into ``out`` when one is given."""
    if out is None:
        return value
    return out.copy_(value)


def format_number(value: float) -> str:
    """Shortest round-trip text of a float for spec strings (``0.1``, ``1e-05``)."""
    return repr(float(value))


def numpy_generator(generator: torch.Generator | None) -> np.random.Generator:
    """A NumPy PCG64 generator seeded by one 63-bit draw from the torch ``generator``."""
    device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, _SEED_HIGH, (1,), generator=generator, device=device))
    return np.random.Generator(np.random.PCG64(seed))


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
            dtype: torch.dtype = torch.float64) -> Tensor:
    """Uniform[0, 1) samples (float64: multiples of 2^-53; float32: of 2^-24) on ``device``."""
    if device.type == "cpu":
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        sample = numpy_generator(generator).random(shape, dtype=np_dtype)
        return torch.from_numpy(sample).to(dtype)
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def dtype_bits(dtype: torch.dtype) -> int:
    """Bits per element of a floating dtype."""
    return torch.finfo(dtype).bits


def kept_count(d: int, k: int | None, ratio: float | None) -> int:
    """``k`` itself (checked ``1 ≤ k ≤ d``) or ``max(1, round(ratio · d))``."""
    d = check_int("d", d, minimum=1)
    if k is not None:
        return check_int("k", k, minimum=1, maximum=d)
    assert ratio is not None
    return min(d, max(1, round(ratio * d)))


def split_count_or_ratio(name: str, k: Any, ratio: Any) -> tuple[int | None, float | None]:
    """Validate the exactly-one-of ``k`` / ``ratio`` pair of Rand-k and Top-k."""
    if k is not None and ratio is not None:
        raise ValueError(f"compressor {name!r} takes k or ratio, not both (k and ratio given)")
    if k is None and ratio is None:
        raise ValueError(f"compressor {name!r} needs k or ratio, e.g. '{name}:ratio=0.1' "
                         f"or '{name}:k=10'")
    if k is not None:
        return check_int("k", k, minimum=1), None
    return None, check_float("ratio", ratio, low=0.0, high=1.0, low_open=True)

