"""Gradient-noise laws: agent ``i`` sees ``g_i = ∇f(x) + Z_i`` (THEORY.md §1).

``Z_{i,j} = σ_{i,j} · n`` with ``n`` a unit-scale draw: standard normal (:class:`Gaussian`) or
Student-t with ``ν > 0`` degrees of freedom (:class:`StudentT`; ``σ`` is the scale, not the
standard deviation; no variance for ``ν ≤ 2``, no mean for ``ν ≤ 1``).

**Batch convention**: a per-agent batch of ``B`` divides the scale by ``√B`` (``σ → σ/√B``), for
every law, heavy-tailed ones included (THEORY.md §1). ``scales(agents, d, batch)`` applies it.
How a batch is *drawn* is a separate choice, ``batch_noise`` (:data:`BATCH_NOISE`): ``"scale"``
(default, the convention itself: one draw at scale ``σ/√B``) or ``"mean"`` (the mean of ``B``
per-sample draws at scale ``σ``, the batch as it is; Gaussian: the same law; Student-t with
``ν ≤ 2``: not the same, THEORY.md §1a).

**Scale shapes**: ``scale`` is a number, a sequence/1-D tensor or an ``(agents, d)``-broadcastable
2-D tensor. A 1-D scale of length ``agents`` is per agent; otherwise a 1-D scale of length ``d``
is per coordinate (when ``agents == d`` per agent wins: pass shape ``(1, d)`` for per coordinate).

Specs: ``gaussian``, ``gaussian:scale=2``, ``gaussian:scale=1/2/3/4`` (per agent, '/'-separated),
``student-t:nu=1,scale=2``.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from . import _special
from ._checks import check_int, check_positive
from ._spec import parse_float_list, parse_spec, reject_unknown

__all__ = ["BATCH_NOISE", "NAMES", "Gaussian", "NoiseLaw", "StudentT", "check_batch_noise",
           "make"]

ScaleLike = float | Sequence[float] | Tensor
NAMES = ("gaussian", "student-t")
# How a per-agent batch of B is drawn (THEORY.md §1a): "scale" one draw at σ/√B (the batch
# convention), "mean" the mean of B per-sample draws at σ. NoiseLaw._BATCH_DRAWS maps each name
# to its sampler, so a further batch law is one more entry there.
BATCH_NOISE = ("scale", "mean")


def check_batch_noise(value: str) -> str:
    """``value`` if it is one of :data:`BATCH_NOISE`, else ValueError naming ``batch_noise``."""
    if value not in BATCH_NOISE:
        raise ValueError(f"batch_noise must be one of {', '.join(BATCH_NOISE)}, got {value!r}")
    return value


def _number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _as_scale(scale: ScaleLike) -> Tensor:
    """Validate ``scale`` (finite, > 0, at most 2-D, non-empty); return a float64 CPU tensor."""
    allowed = "a finite number > 0, or a non-empty sequence/tensor (at most 2-D) of them"
    try:
        if isinstance(scale, Tensor):
            values = scale.detach().to(device="cpu", dtype=torch.float64).clone()
        elif isinstance(scale, bool):
            raise TypeError
        else:
            values = torch.as_tensor(scale, dtype=torch.float64).clone()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"scale must be {allowed}, got {scale!r}") from None
    if values.dim() == 1 and values.numel() == 1:
        values = values[0]
    if values.dim() > 2 or values.numel() == 0:
        raise ValueError(f"scale must be {allowed}, got shape {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()) or not bool((values > 0).all()):
        raise ValueError(f"scale must be {allowed}, got {values.tolist()!r}")
    return values


class NoiseLaw(ABC):
    """A per-agent, per-coordinate noise law ``Z_{i,j} = σ_{i,j} · n``, ``n`` of unit scale."""

    name: str
    finite_variance: bool

    def __init__(self, scale: ScaleLike = 1.0) -> None:
        self.scale = _as_scale(scale)
        self._cache: dict[tuple, Tensor] = {}

    @property
    def spec(self) -> str:
        """The spec string :func:`make` builds this law from."""
        return f"{self.name}:{self._options()}scale={self._scale_spec()}"

    def _options(self) -> str:
        return ""

    def with_scale(self, scale: ScaleLike) -> NoiseLaw:
        """The same law with scale ``scale`` (e.g. one agent's entry of a per-agent scale)."""
        law = copy.copy(self)
        law.scale = _as_scale(scale)
        law._cache = {}
        return law

    def _scale_spec(self) -> str:
        if self.scale.dim() == 0:
            return _number(self.scale.item())
        if self.scale.dim() == 1:
            return "/".join(_number(v) for v in self.scale.tolist())
        return f"tensor{tuple(self.scale.shape)}"   # 2-D scales have no spec form

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    # -- scales ------------------------------------------------------------------------------
    def _base(self, agents: int, d: int) -> Tensor:
        """σ broadcast to (agents, d), float64 on CPU (before the batch division)."""
        s = self.scale
        if s.dim() == 0:
            return s.expand(agents, d)
        if s.dim() == 1:
            if s.numel() == agents:
                return s[:, None].expand(agents, d)
            if s.numel() == d:
                return s[None, :].expand(agents, d)
            raise ValueError(f"scale has {s.numel()} values; expected 1, agents={agents} "
                             f"(per agent) or d={d} (per coordinate)")
        rows, cols = s.shape
        if rows not in (1, agents) or cols not in (1, d):
            raise ValueError(f"scale has shape {tuple(s.shape)}; a 2-D scale must broadcast to "
                             f"(agents, d) = ({agents}, {d})")
        return s.expand(agents, d)

    def _cached(self, kind: str, agents: int, d: int, batch: int, dtype: torch.dtype,
                device: torch.device | str) -> Tensor:
        agents = check_int("agents", agents, minimum=1)
        d = check_int("d", d, minimum=1)
        batch = check_int("batch", batch, minimum=1)
        key = (kind, agents, d, batch, dtype, str(device))
        hit = self._cache.get(key)
        if hit is None:
            sigma = self._base(agents, d) / math.sqrt(batch)
            if kind == "variance":
                sigma = sigma.square() * self._variance_factor()
            elif kind == "inverse":
                sigma = sigma.reciprocal()
            if len(self._cache) > 64:
                self._cache.clear()
            hit = self._cache[key] = sigma.to(dtype=dtype, device=device).contiguous()
        return hit

    def scales(self, agents: int, d: int, batch: int = 1, *, dtype: torch.dtype = torch.float64,
               device: torch.device | str = "cpu") -> Tensor:
        """Effective scales ``σ_{i,j}/√B``, shape ``(agents, d)`` (THEORY.md §1)."""
        return self._cached("scale", agents, d, batch, dtype, device).clone()

    def variance(self, agents: int, d: int, batch: int = 1, *,
                 dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
        """``Var Z_{i,j}``, shape ``(agents, d)``: ``σ²/B`` times the unit law's variance."""
        if not self.finite_variance:
            raise ValueError(f"variance: the covariance of {self.spec} does not exist "
                             f"(Student-t needs nu > 2, see THEORY.md §3, §6)")
        return self._cached("variance", agents, d, batch, dtype, device).clone()

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, shape: tuple[int, ...], generator: torch.Generator, batch: int = 1, *,
               dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
               batch_noise: str = "scale") -> Tensor:
        """Draw ``Z`` of shape ``(..., agents, d)`` for a batch of ``B`` (§1, §1a).

        ``batch_noise="scale"``: ``Z_{i,j} = σ_{i,j}/√B · n``; ``"mean"``:
        ``Z_{i,j} = σ_{i,j} · mean_{b ≤ B} n_b`` (B independent unit draws, B× the draws).
        """
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"shape must be (..., agents, d) with at least 2 entries, got {shape}")
        draw = self._BATCH_DRAWS[check_batch_noise(batch_noise)]
        batch = check_int("batch", batch, minimum=1)
        return draw(self, shape, generator, batch, dtype, torch.device(device))

    def _draw_scaled(self, shape: tuple[int, ...], generator: torch.Generator, batch: int,
                     dtype: torch.dtype, device: torch.device) -> Tensor:
        """One unit draw per entry, times the convention's scale ``σ/√B``."""
        scales = self._cached("scale", shape[-2], shape[-1], batch, dtype, device)
        return self._standard(shape, generator, dtype, device).mul_(scales)

    def _draw_mean(self, shape: tuple[int, ...], generator: torch.Generator, batch: int,
                   dtype: torch.dtype, device: torch.device) -> Tensor:
        """The mean of ``batch`` unit draws per entry, times the per-sample scale ``σ``.

        Reads the scale at batch 1, so it does not share the convention's ``σ/√B`` line.
        """
        total = self._standard(shape, generator, dtype, device)
        for _ in range(batch - 1):
            total.add_(self._standard(shape, generator, dtype, device))
        scales = self._cached("scale", shape[-2], shape[-1], 1, dtype, device)
        return total.mul_(scales).div_(batch)

    _BATCH_DRAWS: ClassVar[dict[str, Callable[..., Tensor]]] = {"scale": _draw_scaled,
                                                                 "mean": _draw_mean}

    def batch_mean_law(self, batch: int) -> NoiseLaw:
        """The law of the mean of ``batch`` draws, when it is in this family (THEORY.md §1a).

        Gaussian: scale ``σ/√B`` (the convention is exact). Student-t with ``ν = 1`` (Cauchy,
        a stable law): scale ``σ`` for every B. Other ν: no closed form in the family
        (ValueError); for ``ν < 2`` the scale of the mean grows like ``σ B^{1/ν − 1}``.
        """
        batch = check_int("batch", batch, minimum=1)
        factor = self._batch_mean_factor(batch)
        return self.with_scale(self.scale * factor)

    def _batch_mean_factor(self, batch: int) -> float:
        return 1.0 / math.sqrt(batch)

    @abstractmethod
    def _standard(self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
                  device: torch.device) -> Tensor:
        """Unit-scale draws of the given shape."""

    # -- distribution functions --------------------------------------------------------------
    @abstractmethod
    def standard_cdf(self, z: Tensor) -> Tensor:
        """CDF ``F`` of the unit-scale law, elementwise."""

    @abstractmethod
    def standard_density_at_zero(self) -> float:
        """``f(0)`` of the unit-scale law; DSignSGD's Phase-3 constant is ``ℓ = 2f(0)`` (§3)."""

    @abstractmethod
    def standard_sign_mean(self, y: Tensor) -> Tensor:
        """``2F(y) − 1 = E[sign(y + n)]`` elementwise, ``n`` of unit scale (``y`` is left as is)."""

    def _variance_factor(self) -> float:
        return 1.0

    def sign_mean(self, grad: Tensor, agents: int, batch: int = 1) -> Tensor:
        """``E[sign(grad + Z_i)] = 2F(grad/σ_i) − 1``: ``(..., d) -> (..., agents, d)`` (§3)."""
        if not isinstance(grad, Tensor) or grad.dim() < 1:
            raise ValueError(f"grad must be a tensor of shape (..., d), got {grad!r}")
        if not grad.is_floating_point():
            grad = grad.to(torch.float64)
        inverse = self._cached("inverse", agents, grad.shape[-1], batch, grad.dtype, grad.device)
        return self.standard_sign_mean(grad.unsqueeze(-2) * inverse)


class Gaussian(NoiseLaw):
    """``Z_{i,j} = σ_{i,j} n``, ``n ~ N(0, 1)``; sign mean ``erf(g/(√2σ))``, ``ℓ = √(2/π)`` (§3)."""

    name = "gaussian"
    finite_variance = True

    def _standard(self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
                  device: torch.device) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def standard_cdf(self, z: Tensor) -> Tensor:
        """``Φ(z) = ½ erfc(−z/√2)``."""
        z = z if z.is_floating_point() else z.to(torch.float64)
        return torch.special.erfc(z * (-1.0 / math.sqrt(2.0))).mul_(0.5)

    def standard_density_at_zero(self) -> float:
        """``1/√(2π)``."""
        return 1.0 / math.sqrt(2.0 * math.pi)

    def standard_sign_mean(self, y: Tensor) -> Tensor:
        return torch.mul(y, 1.0 / math.sqrt(2.0)).erf_()


class StudentT(NoiseLaw):
    """``Z_{i,j} = σ_{i,j} T``, ``T ~ t_ν`` (σ a scale); ``Var = σ²ν/(ν−2)`` for ``ν > 2`` (§1, §3).

    Sampling is exact for every ``ν > 0`` and needs no rejection: Bailey's polar method (Math.
    Comp. 62, 1994) with the disc point in polar form, ``W ~ U(0, 1]``, ``θ ~ U[0, π)``,
    ``T = cos θ · √(ν (W^{−2/ν} − 1))`` (log space for small ν, so nothing overflows before the
    dtype's range ends). Two uniforms per draw: ~2.5x faster than ``n/√(χ²_ν/ν)`` with torch's
    gamma sampler, ~1.5x a plain ``randn``. ``ν = 1`` draws a Cauchy ``tan(π(U − ½))``.
    ``ℓ_ν = 2f_ν(0) = 2Γ((ν+1)/2)/(√(πν) Γ(ν/2))``.
    """

    name = "student-t"

    def __init__(self, nu: float, scale: ScaleLike = 1.0) -> None:
        super().__init__(scale)
        self.nu = check_positive("nu", nu)
        self.finite_variance = self.nu > 2.0

    def _options(self) -> str:
        return f"nu={_number(self.nu)},"

    def _variance_factor(self) -> float:
        return self.nu / (self.nu - 2.0)

    def _batch_mean_factor(self, batch: int) -> float:
        if batch == 1 or self.nu == 1.0:
            return 1.0
        raise ValueError(f"batch_mean_law: the mean of {batch} Student-t draws with nu="
                         f"{_number(self.nu)} is not a Student-t law (only nu = 1, Cauchy, is "
                         f"stable; THEORY.md §1a)")

    def _standard(self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
                  device: torch.device) -> Tensor:
        nu = self.nu
        if nu == 1.0:
            return torch.empty(shape, dtype=dtype, device=device).cauchy_(generator=generator)
        info = torch.finfo(dtype)
        # W = 1 − rand ≥ eps/2 (floats below 1 are eps/2 apart): can W^{−2/ν} − 1 overflow?
        overflow = (2.0 / nu) * -math.log(info.eps / 2) >= math.log(info.max)
        log_w = torch.rand(shape, generator=generator, dtype=dtype, device=device)
        log_w.neg_().log1p_()                                        # log W, W ~ U(0, 1]
        cos = torch.empty(shape, dtype=dtype, device=device)
        cos.uniform_(0.0, math.pi, generator=generator).cos_()      # cos θ
        if not overflow:                                             # cos θ √(ν (W^{−2/ν} − 1))
            return log_w.mul_(-2.0 / nu).expm1_().sqrt_().mul_(cos.mul_(math.sqrt(nu)))
        # small ν: every factor but √(1 − W^{2/ν}) ≤ 1 goes into one exponent, so T is finite
        # whenever it is representable: |T| = exp(log √ν − log W/ν + log|cos θ|) √(1 − W^{2/ν})
        root = (log_w * (2.0 / nu)).expm1_().neg_().sqrt_()
        log_w.mul_(-1.0 / nu).add_(0.5 * math.log(nu)).add_(cos.abs().log_())
        return torch.copysign(log_w.exp_().mul_(root), cos)

    def standard_cdf(self, z: Tensor) -> Tensor:
        """``F_ν(z)`` via the regularised incomplete beta function (``_special.t_cdf``)."""
        return _special.t_cdf(z, self.nu)

    def standard_density_at_zero(self) -> float:
        """``f_ν(0) = Γ((ν+1)/2)/(√(πν) Γ(ν/2))``."""
        return _special.t_density_at_zero(self.nu)

    def standard_sign_mean(self, y: Tensor) -> Tensor:
        return _special.t_sign_mean(y, self.nu)


def make(spec: str) -> NoiseLaw:
    """Build a noise law from ``gaussian[:scale=S]`` or ``student-t:nu=V[,scale=S]``.

    ``S`` is a number or per-agent numbers separated by '/' (e.g. ``scale=1/2/3/4``).
    """
    name, options = parse_spec(spec, "noise")
    if name in ("student_t", "studentt", "t"):
        name = "student-t"
    if name not in NAMES:
        raise ValueError(f"noise must be one of {', '.join(NAMES)}; got {name!r} in {spec!r}")
    reject_unknown("noise", name, options, {"scale"} if name == "gaussian" else {"scale", "nu"})
    scale: ScaleLike = 1.0
    if "scale" in options:
        values = parse_float_list("scale", options["scale"])
        scale = values[0] if len(values) == 1 else values
    if name == "gaussian":
        return Gaussian(scale)
    if "nu" not in options:
        raise ValueError(f"noise 'student-t' needs nu (degrees of freedom > 0), e.g. "
                         f"'student-t:nu=1,scale=1'; got {spec!r}")
    try:
        nu = float(options["nu"])
    except ValueError:
        raise ValueError(f"nu must be a number > 0, got {options['nu']!r}") from None
    return StudentT(nu, scale)
