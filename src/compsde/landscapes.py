"""Test functions ``f: R^d -> R`` (THEORY.md §7), batched over any leading dimensions.

Every method takes ``x`` of shape ``(..., d)`` and keeps its dtype and device; parameters are
stored in float64 and cast (once per dtype/device) on use. Losses are reported as ``f(x) − f*``
where ``minimum`` (f*) is known, else ``f(x)``.

Specs (``make``):
- ``quadratic`` (d=2), ``quadratic:d=5`` — ``½‖x‖²`` (H = I);
  ``quadratic:d=5,eig=0.1:10`` — diagonal H with eigenvalues ``λ_j = A (B/A)^{j/(d−1)}``,
  log-uniform and ascending from A to B (0 < A ≤ B; d = 1 gives A);
  ``quadratic:eig=1/2/3`` — the listed eigenvalues (d = their count; any sign).
- ``rosenbrock`` (d=2), ``rosenbrock:d=4,a=1,b=100``.
- ``saddle`` (d=2), ``saddle:d=4,neg=2,a=1,c=1,lam=1`` — see :class:`Saddle`.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._checks import check_float, check_int, check_positive
from ._spec import parse_float_list, parse_spec, reject_unknown

__all__ = ["DENSE_BUDGET", "NAMES", "Autograd", "Landscape", "Quadratic", "Rosenbrock", "Saddle",
           "check_dense", "check_vector_memory", "make"]

NAMES = ("quadratic", "rosenbrock", "saddle")
#: bytes a dense (…, d, d) Hessian may take; past it ``hessian``/``matrix`` raise ValueError
DENSE_BUDGET = 1 << 30


def check_dense(what: str, d: int, points: int = 1, itemsize: int = 8,
                budget: int | None = None) -> None:
    """Raise ValueError when ``points`` dense (d, d) matrices exceed ``budget`` bytes.

    The message says how much memory they need, so a d = 10⁶ Hessian (8 TB) is refused
    before any allocation.
    """
    limit = DENSE_BUDGET if budget is None else budget
    need = int(points) * int(d) * int(d) * int(itemsize)
    if need > limit:
        from .chunks import human_bytes

        raise ValueError(f"{what} is a dense ({d}, {d}) matrix{'' if points == 1 else ' per point'}"
                         f" needing {human_bytes(need)}, past the limit of {human_bytes(limit)} "
                         f"(compsde.landscapes.DENSE_BUDGET); gradients, losses, the SDE and "
                         f"the theory need only O(d) memory (a diagonal quadratic keeps its "
                         f"eigenvalues)")


def physical_memory() -> int | None:
    """Bytes of memory of this machine (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def check_vector_memory(what: str, d: int, itemsize: int = 8, memory: int | None = None
                        ) -> None:
    """Raise ValueError, before anything is allocated, when one d-vector (``what``) alone
    needs more than the machine's memory; the message says how much it would need."""
    limit = physical_memory() if memory is None else memory
    need = int(d) * int(itemsize)
    if limit is not None and need > limit:
        from .chunks import human_bytes

        raise ValueError(f"{what} needs {human_bytes(need)} for its d = {d:,} float64 values "
                         f"alone (a simulation several times that), more than this machine's "
                         f"{human_bytes(limit)} of memory; choose a smaller d")


def _number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


class Landscape(ABC):
    """A test function with value, gradient and Hessian, batched over leading dimensions."""

    name: str
    spec: str
    dim: int
    minimum: float | None = None
    minimizer: Tensor | None = None   # one point attaining ``minimum`` (float64), where known

    def __init__(self) -> None:
        self._params: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def _check(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a tensor of shape (..., {self.dim}), got {type(x)}")
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., d) with d = {self.dim} for {self.spec}, "
                             f"got shape {tuple(x.shape)}")
        return x if x.is_floating_point() else x.to(torch.float64)

    def _param(self, name: str, value: Tensor, like: Tensor) -> Tensor:
        key = (name, like.dtype, like.device)
        hit = self._params.get(key)
        if hit is None:
            hit = self._params[key] = value.to(dtype=like.dtype, device=like.device)
        return hit

    @abstractmethod
    def value(self, x: Tensor) -> Tensor:
        """``f(x)``: ``(..., d) -> (...)``."""

    @abstractmethod
    def grad(self, x: Tensor) -> Tensor:
        """``∇f(x)``: ``(..., d) -> (..., d)``."""

    def hessian(self, x: Tensor) -> Tensor:
        """``∇²f(x)``: ``(..., d) -> (..., d, d)`` (autograd through :meth:`grad` by default);
        refused with a ValueError past :data:`DENSE_BUDGET` bytes."""
        x = self._dense_check(x)
        return _autograd_hessian(self.grad, x)

    def _dense_check(self, x: Tensor) -> Tensor:
        x = self._check(x)
        check_dense(f"the Hessian of {self.spec}", self.dim, x[..., 0].numel(),
                    x.element_size())
        return x

    def lipschitz(self) -> float | None:
        """Global smoothness constant ``L`` (``‖∇²f‖ ≤ L``) where known, else None."""
        return None


def _autograd_hessian(grad: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Hessian rows by d backward passes through a batched gradient (no loop over runs)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        g = grad(xr)
        rows = []
        for j in range(x.shape[-1]):
            (row,) = torch.autograd.grad(g[..., j].sum(), xr, retain_graph=True,
                                         allow_unused=True)
            rows.append(torch.zeros_like(x) if row is None else row)
    return torch.stack(rows, dim=-2).detach()


class Quadratic(Landscape):
    """``f(x) = ½ xᵀHx`` with H diagonal (``eigenvalues``) or a full symmetric matrix (§4, §7).

    ``f* = 0`` at ``x = 0`` when H is positive semi-definite, else ``minimum`` is None;
    ``L = max_j |λ_j|``. ``eigenvalues`` are the diagonal as given (diagonal H) or ascending.
    """

    name = "quadratic"

    def __init__(self, h: Sequence[float] | Tensor, *, spec: str | None = None) -> None:
        super().__init__()
        try:
            matrix = torch.as_tensor(h, dtype=torch.float64).detach().cpu().clone()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"h must be eigenvalues (1-D) or a symmetric matrix (2-D), "
                             f"got {h!r}") from None
        if matrix.dim() not in (1, 2) or matrix.numel() == 0 or (
                matrix.dim() == 2 and matrix.shape[0] != matrix.shape[1]):
            raise ValueError(f"h must be eigenvalues (1-D, non-empty) or a square matrix (2-D), "
                             f"got shape {tuple(matrix.shape)}")
        if not bool(torch.isfinite(matrix).all()):
            raise ValueError("h must contain finite numbers only")
        self.diagonal = matrix.dim() == 1
        self.dim = matrix.shape[0]
        self._matrix: Tensor | None = None
        if self.diagonal:
            self.eigenvalues = matrix       # O(d): the dense H is built only on request
        else:
            scale = float(matrix.abs().max()) or 1.0
            if float((matrix - matrix.T).abs().max()) > 1e-10 * scale:
                raise ValueError("h must be a symmetric matrix (H = Hᵀ)")
            self._matrix = 0.5 * (matrix + matrix.T)
            self.eigenvalues = torch.linalg.eigvalsh(self._matrix)
        lam_abs = float(self.eigenvalues.abs().max())
        psd = float(self.eigenvalues.min()) >= -1e-12 * max(lam_abs, 1.0)
        self.minimum = 0.0 if psd else None
        self.minimizer = torch.zeros(self.dim, dtype=torch.float64) if psd else None
        self._lipschitz = lam_abs
        if spec is None:
            spec = (f"quadratic:eig={'/'.join(_number(v) for v in matrix.tolist())}"
                    if self.diagonal else f"quadratic:d={self.dim},h=matrix")
        self.spec = spec

    @property
    def matrix(self) -> Tensor:
        """H as a dense (d, d) float64 tensor (built on first use for a diagonal H; refused
        past :data:`DENSE_BUDGET` bytes)."""
        if self._matrix is None:
            check_dense(f"H of {self.spec}", self.dim)
            self._matrix = torch.diag(self.eigenvalues)
        return self._matrix

    def hessian_diagonal(self, x: Tensor) -> Tensor:
        """``diag H`` broadcast to ``(..., d)`` (O(d) for every H)."""
        x = self._check(x)
        diag = self.eigenvalues if self.diagonal else torch.diagonal(self.matrix)
        return self._param("diag", diag, x).expand_as(x).clone()

    def value(self, x: Tensor) -> Tensor:
        """``½ xᵀHx``."""
        return 0.5 * (x * self.grad(x)).sum(-1)

    def grad(self, x: Tensor) -> Tensor:
        """``Hx``."""
        x = self._check(x)
        if self.diagonal:
            return x * self._param("eig", self.eigenvalues, x)
        return x @ self._param("h", self.matrix, x)      # H symmetric: (Hx)ᵀ = xᵀH

    def hessian(self, x: Tensor) -> Tensor:
        """``H``, broadcast to ``(..., d, d)`` (refused past :data:`DENSE_BUDGET` bytes)."""
        x = self._dense_check(x)
        h = self._param("h", self.matrix, x)
        return h.expand(*x.shape[:-1], self.dim, self.dim).clone()

    def lipschitz(self) -> float:
        """``max_j |λ_j|`` (= λ_max for PSD H)."""
        return self._lipschitz


class Rosenbrock(Landscape):
    """``f(x) = Σ_{j<d} [b(x_{j+1} − x_j²)² + (a − x_j)²]`` (§7), ``d ≥ 2``, ``b > 0``.

    ``f* = 0`` at ``(a, a²)`` for d = 2 and at ``(a, …, a)`` for ``a ∈ {0, 1}``; otherwise the
    minimum has no closed form and ``minimum`` is None. Not globally smooth (``L`` None).
    """

    name = "rosenbrock"

    def __init__(self, d: int = 2, a: float = 1.0, b: float = 100.0) -> None:
        super().__init__()
        self.dim = check_int("d", d, minimum=2)
        self.a = check_float("a", a)
        self.b = check_positive("b", b)
        self.spec = f"rosenbrock:d={self.dim},a={_number(self.a)},b={_number(self.b)}"
        if self.dim == 2:
            self.minimizer = torch.tensor([self.a, self.a**2], dtype=torch.float64)
        elif self.a in (0.0, 1.0):
            self.minimizer = torch.full((self.dim,), self.a, dtype=torch.float64)
        self.minimum = 0.0 if self.minimizer is not None else None

    def value(self, x: Tensor) -> Tensor:
        x = self._check(x)
        head, tail = x[..., :-1], x[..., 1:]
        return (self.b * (tail - head * head).square() + (self.a - head).square()).sum(-1)

    def grad(self, x: Tensor) -> Tensor:
        """``∂_j f = −4b x_j r_j − 2(a − x_j) + 2b r_{j−1}``, ``r_j = x_{j+1} − x_j²``."""
        x = self._check(x)
        head = x[..., :-1]
        r = x[..., 1:] - head * head
        g = torch.zeros_like(x)
        g[..., :-1] = -4.0 * self.b * head * r - 2.0 * (self.a - head)
        g[..., 1:] += 2.0 * self.b * r
        return g

    def hessian(self, x: Tensor) -> Tensor:
        """Tridiagonal: ``H_{j,j+1} = −4b x_j``, ``H_jj = 2b [j ≥ 1]``
        ``+ (12b x_j² − 4b x_{j+1} + 2) [j < d − 1]``."""
        x = self._dense_check(x)
        head = x[..., :-1]
        main = torch.zeros_like(x)
        main[..., :-1] = 12.0 * self.b * head * head - 4.0 * self.b * x[..., 1:] + 2.0
        main[..., 1:] += 2.0 * self.b
        off = -4.0 * self.b * head
        return (torch.diag_embed(main) + torch.diag_embed(off, offset=1)
                + torch.diag_embed(off, offset=-1))


class Saddle(Landscape):
    """Embedded saddle ``f(x) = ½ Σ_j h_j x_j² + (λ/4)‖x‖⁴`` (§7), ``x = 0`` a strict saddle.

    ``h_j = −a`` for the first ``neg`` coordinates and ``+c`` for the rest (``a, c, λ > 0``).
    Since ``f ≥ −(a/2) r² + (λ/4) r⁴`` with ``r = ‖x‖``, the minimisers are the sphere
    ``‖x‖² = a/λ`` inside the span of the first ``neg`` coordinates and ``f* = −a²/(4λ)``.
    Hessian ``diag(h) + λ(‖x‖² I + 2xxᵀ)``; not globally smooth (``L`` None).
    """

    name = "saddle"

    def __init__(self, d: int = 2, neg: int = 1, a: float = 1.0, c: float = 1.0,
                 lam: float = 1.0) -> None:
        super().__init__()
        self.dim = check_int("d", d, minimum=1)
        self.neg = check_int("neg", neg, minimum=1, maximum=self.dim)
        self.a = check_positive("a", a)
        self.c = check_positive("c", c)
        self.lam = check_positive("lam", lam)
        self.curvature = torch.full((self.dim,), self.c, dtype=torch.float64)
        self.curvature[: self.neg] = -self.a
        self.minimum = -self.a**2 / (4.0 * self.lam)
        self.minimizer = torch.zeros(self.dim, dtype=torch.float64)
        self.minimizer[0] = math.sqrt(self.a / self.lam)
        self.spec = (f"saddle:d={self.dim},neg={self.neg},a={_number(self.a)},"
                     f"c={_number(self.c)},lam={_number(self.lam)}")

    def value(self, x: Tensor) -> Tensor:
        x = self._check(x)
        h = self._param("h", self.curvature, x)
        sq = x * x
        return 0.5 * (sq * h).sum(-1) + 0.25 * self.lam * sq.sum(-1).square()

    def grad(self, x: Tensor) -> Tensor:
        """``h ⊙ x + λ‖x‖² x``."""
        x = self._check(x)
        h = self._param("h", self.curvature, x)
        return x * (h + self.lam * (x * x).sum(-1, keepdim=True))

    def hessian(self, x: Tensor) -> Tensor:
        x = self._dense_check(x)
        h = self._param("h", self.curvature, x)
        diag = h + self.lam * (x * x).sum(-1, keepdim=True)
        return torch.diag_embed(diag) + (2.0 * self.lam) * x.unsqueeze(-1) * x.unsqueeze(-2)


class Autograd(Landscape):
    """Any batched ``fn: (..., d) -> (...)``; gradient and Hessian by ``torch.autograd``.

    ``fn`` must treat leading dimensions independently (row k of the output depends on row k of
    the input only), since the gradient is that of ``fn(x).sum()``.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], dim: int, *,
                 minimum: float | None = None, minimizer: Sequence[float] | Tensor | None = None,
                 name: str = "autograd", lipschitz: float | None = None) -> None:
        super().__init__()
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        self.dim = check_int("dim", dim, minimum=1)
        self.minimum = None if minimum is None else check_float("minimum", minimum)
        if minimizer is not None:
            point = torch.as_tensor(minimizer, dtype=torch.float64).reshape(-1)
            if point.numel() != self.dim:
                raise ValueError(f"minimizer must have {self.dim} entries, got {point.numel()}")
            self.minimizer = point
        self._lipschitz = None if lipschitz is None else check_positive("lipschitz", lipschitz)
        self.name = name
        self.spec = f"{name}:d={self.dim}"

    def value(self, x: Tensor) -> Tensor:
        x = self._check(x)
        out = self.fn(x)
        if out.shape != x.shape[:-1]:
            raise ValueError(f"fn must map (..., d) to (...), got {tuple(x.shape)} -> "
                             f"{tuple(out.shape)}")
        return out

    def grad(self, x: Tensor) -> Tensor:
        x = self._check(x)
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.value(xr).sum(), xr, allow_unused=True)
        return torch.zeros_like(x) if g is None else g

    def hessian(self, x: Tensor) -> Tensor:
        x = self._dense_check(x)

        def grad_graph(xr: Tensor) -> Tensor:
            (g,) = torch.autograd.grad(self.value(xr).sum(), xr, create_graph=True)
            return g

        return _autograd_hessian(grad_graph, x)

    def lipschitz(self) -> float | None:
        return self._lipschitz


def _eigenvalues(text: str, d: int | None) -> list[float]:
    """``A:B`` (log-uniform, ascending, needs d) or ``v1/v2/...`` (explicit)."""
    if ":" in text:
        low_text, _, high_text = text.partition(":")
        try:
            low, high = float(low_text), float(high_text)
        except ValueError:
            raise ValueError(f"eig must be A:B with numbers 0 < A <= B, got {text!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"eig must be A:B with finite numbers 0 < A <= B, got {text!r}")
        n = d if d is not None else 2      # quadratic's default d
        if n == 1:
            return [low]
        ratio = math.log(high / low)
        values = [low * math.exp(ratio * j / (n - 1)) for j in range(n)]
        values[-1] = high
        return values
    values = parse_float_list("eig", text)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"eig values must be finite numbers, got {text!r}")
    if d is not None and len(values) != d:
        raise ValueError(f"eig lists {len(values)} eigenvalues but d={d}")
    return values


def make(spec: str) -> Landscape:
    """Build a landscape from a spec string (see the module docstring for the keys)."""
    name, options = parse_spec(spec, "landscape")
    if name not in NAMES:
        raise ValueError(f"landscape must be one of {', '.join(NAMES)}; got {name!r} in {spec!r}")
    keys = {"quadratic": {"d", "eig"}, "rosenbrock": {"d", "a", "b"},
            "saddle": {"d", "neg", "a", "c", "lam"}}[name]
    reject_unknown("landscape", name, options, keys)
    if name == "quadratic":
        d = check_int("d", options["d"], minimum=1) if "d" in options else None
        if d is not None:
            check_vector_memory(f"landscape {spec}", d)
        if "eig" not in options:
            d = 2 if d is None else d
            return Quadratic(torch.ones(d, dtype=torch.float64), spec=f"quadratic:d={d}")
        text = options["eig"]
        eig = _eigenvalues(text, d)
        canonical = (f"quadratic:d={len(eig)},eig={text}" if ":" in text
                     else f"quadratic:eig={text}")
        return Quadratic(eig, spec=canonical)
    d = options.get("d", 2)
    floats = {key: check_float(key, value) for key, value in options.items()
              if key not in ("d", "neg")}
    if name == "rosenbrock":
        return Rosenbrock(d=d, **floats)
    return Saddle(d=d, neg=options.get("neg", 1), **floats)
