"""Measure a model's gradient noise: moments, tail, SNR, DSignSGD phases, ω, curvature.

Each of M mini-batch gradients (batch B, what one agent sees) is an observation of
``g = ∇f + Z`` (THEORY.md §1). From them:

- Welford per-coordinate mean, variance and excess kurtosis over all d coordinates
  (:mod:`.stats`); ``SNR_j = |mean_j| / std_j``;
- the Student-t fit (shared ν, per-coordinate location μ_j and scale σ_j; :mod:`.tails`) and
  the Hill index on a random subset of at most ``max_coords`` coordinates whose samples are kept;
- the DSignSGD phase of each kept coordinate from ``Y_j = |μ_j|/(√2 σ_j)`` (THEORY.md §3):
  Phase 1 ``Y > 3/2``, Phase 2 ``1 < Y < 3/2``, Phase 3 ``Y < 1`` (σ the t scale; the robust
  location μ_j estimates ∂_j f also when the noise has no mean);
- ω̂ of each candidate compressor on the real gradients (:mod:`.omega`);
- L = λ_max(∇²f) by power iteration on Hessian-vector products (:mod:`.curvature`);
- with ``groups`` (e.g. :func:`compsde.nn.groups.parameter_groups`), ν̂ and the phases per
  parameter group from a further ``per_group`` coordinates of each group (:mod:`.groups`).

Sums over all d coordinates of quantities known only on the kept subset are extrapolated by
``d / kept`` (an unbiased estimate for a uniformly drawn subset), or, for the noise scales
under finite variance, by a ratio estimator against the Welford variances of all coordinates.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .._checks import check_int
from ..compressors import Compressor
from ..noise import NoiseLaw
from ..theory import sign_mean
from .batch_law import BatchLaw, fit_batch_law, samples_needed
from .curvature import EigenEstimate, function_hvp, model_hvp, top_eigenvalue
from .groups import PHASE1_Y, PHASE3_Y, GroupNoise, fit_groups, pick_group_coordinates
from .omega import OmegaEstimate, OmegaMeter
from .stats import Welford
from .tails import HillEstimate, StudentTFit, fit_student_t, hill, nu_from_kurtosis

DEFAULT_COMPRESSORS = ("randk:ratio=0.1", "randk:ratio=0.01", "qsgd:levels=16", "natural")
COMPUTE_WINDOW = 0.3     # seconds of timed forward+backward passes behind compute_seconds
COMPUTE_EXTRA = 200      # at most this many passes beyond the measured mini-batches
TAIL_SAMPLE = 20000


@dataclass
class NoiseMeasurement:
    """Everything measured about the gradient noise at one point (module docstring)."""

    d: int
    samples: int
    batch: int | None
    mean: Tensor
    variance: Tensor
    excess_kurtosis: Tensor
    coords: Tensor
    fit: StudentTFit
    hill: HillEstimate
    omegas: dict[str, OmegaEstimate]
    curvature: EigenEstimate | None = None
    compute_seconds: float | None = None
    abs_z: Tensor | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    groups: dict[str, GroupNoise] = field(default_factory=dict)
    batch_law: BatchLaw | None = None
    group_laws: dict[str, BatchLaw | None] = field(default_factory=dict)

    @property
    def gamma(self) -> float:
        """The measured batch exponent γ̂ (scale ∝ B^{−γ}, §5a); ½ where it was not measured."""
        return 0.5 if self.batch_law is None else self.batch_law.gamma

    # -- tail and scale ---------------------------------------------------------------------
    @property
    def nu(self) -> float:
        return self.fit.nu

    @property
    def finite_variance(self) -> bool:
        """Whether the noise has a variance: the t fit says ν̂ > 2 **and** the Hill index is
        not confidently below 2 (``α̂ + 2 se < 2``).

        The t fit is driven by the body of the law (what DSignSGD's ℓ and σ need); for
        α-stable noise with α ≥ 1.5 it returns ν̂ > 2 although the variance is infinite, while
        Hill, which looks only at the tail, still sees α < 2 (module tests: α = 1.5).
        """
        return self.fit.nu > 2.0 and not self.hill.alpha + 2.0 * self.hill.se < 2.0

    def variance_verdict(self) -> str:
        """One line saying which estimator decided :attr:`finite_variance`."""
        hill = f"Hill α̂ = {self.hill.alpha:.3g} ± {self.hill.se:.2g}"
        if self.fit.nu <= 2.0:
            return f"t fit ν̂ = {self.fit.nu:.3g} ≤ 2 ({hill})"
        if not self.finite_variance:
            return f"{hill}: tail index below 2 (t fit of the body: ν̂ = {self.fit.nu:.3g})"
        return f"t fit ν̂ = {self.fit.nu:.3g} > 2 and {hill}"

    @property
    def kept(self) -> int:
        return int(self.coords.numel())

    @property
    def _extrapolate(self) -> float:
        return self.d / self.kept

    @property
    def variance_sum(self) -> float:
        """``tr Σ = Σ_j Var(g_j)`` at batch B (Welford, all coordinates)."""
        return float(self.variance.sum())

    def _ratio_sum(self, power: int) -> float:
        """``Σ_j σ_j^p`` over all d coordinates from the kept ones.

        Noise scales are very uneven across coordinates, so a plain ``d/kept`` extrapolation
        is noisy. With finite variance we use the ratio estimator
        ``Σ_all sd_j^p · (Σ_kept σ_j^p / Σ_kept sd_j^p)`` (sd from Welford over all d; the
        kept subset only calibrates the t-scale/sd ratio); otherwise ``d/kept``.
        """
        kept = self.fit.scale.pow(power)
        if self.finite_variance:
            sd = self.variance.sqrt().pow(power)
            denom = float(sd[self.coords].sum())
            if denom > 0:
                return float(sd.sum()) * float(kept.sum()) / denom
        return float(kept.sum()) * self._extrapolate

    @property
    def scale_sum(self) -> float:
        """``Σ_j σ_j`` (t scales) over all coordinates (:meth:`_ratio_sum`)."""
        return self._ratio_sum(1)

    @property
    def scale_sq_sum(self) -> float:
        """``Σ_j σ_j²`` (t scales) over all coordinates (:meth:`_ratio_sum`)."""
        return self._ratio_sum(2)

    @property
    def grad_sq(self) -> float:
        """``‖∇f‖²`` from the robust locations, minus their sampling variance
        ``σ²(ν+3)/(M(ν+1))`` (Gaussian: σ²/M), extrapolated; clipped at 0."""
        nu = self.nu
        factor = 1.0 if math.isinf(nu) else (nu + 3.0) / (nu + 1.0)
        noise = self.fit.scale.pow(2).sum() * factor / self.samples
        return max(float(self.fit.loc.pow(2).sum() - noise) * self._extrapolate, 0.0)

    # -- per coordinate -----------------------------------------------------------------------
    @property
    def snr(self) -> Tensor:
        """``|mean_j| / std_j`` from Welford (all coordinates; 0 where std is 0)."""
        std = self.variance.sqrt()
        return torch.where(std > 0, self.mean.abs() / std.clamp_min(1e-300),
                           torch.zeros_like(std))

    @property
    def phase_y(self) -> Tensor:
        """``Y_j = |μ_j| / (√2 σ_j)`` on the kept coordinates with noise (THEORY.md §3)."""
        live = ~self.fit.degenerate
        return self.fit.loc[live].abs() / (math.sqrt(2.0) * self.fit.scale[live])

    @property
    def phase_labels(self) -> Tensor:
        """1, 2 or 3 per kept noisy coordinate (Phase 1 ``Y > 3/2``, 3 ``Y < 1``)."""
        y = self.phase_y
        return torch.where(y > PHASE1_Y, 1, torch.where(y > PHASE3_Y, 2, 3))

    @property
    def phases(self) -> dict[str, float]:
        labels = self.phase_labels
        n = max(labels.numel(), 1)
        return {f"phase{p}": float((labels == p).sum()) / n for p in (1, 2, 3)}

    def sign_means(self) -> Tensor:
        """``φ_j = E sign(g_j) = 2F_ν(μ_j/σ_j) − 1`` on the kept noisy coordinates (§3)."""
        live = ~self.fit.degenerate
        y = (self.fit.loc[live] / self.fit.scale[live]).numpy()
        nu = None if math.isinf(self.nu) else self.nu
        return torch.from_numpy(sign_mean(y, nu))

    def kurtosis_summary(self) -> dict[str, float]:
        k = self.excess_kurtosis[self.variance > 0]
        median = float(k.median()) if k.numel() else math.nan
        mean = float(k.mean()) if k.numel() else math.nan
        return {"median": median, "mean": mean, "nu_from_mean": nu_from_kurtosis(mean)}

    def to_dict(self) -> dict[str, Any]:
        """Summary for ``result.json`` (no per-coordinate arrays)."""
        snr = self.snr
        fit = self.fit
        return {
            "source": self.source, "dim": self.d, "samples": self.samples, "batch": self.batch,
            "kept_coordinates": self.kept, "degenerate_coordinates": int(fit.degenerate.sum()),
            "nu": fit.nu, "nu_se": fit.nu_se, "nu_interval": list(fit.nu_interval),
            "nu_uncorrected": fit.nu_raw, "finite_variance": self.finite_variance,
            "variance_verdict": self.variance_verdict(),
            "hill": {"alpha": self.hill.alpha, "se": self.hill.se, "k": self.hill.k,
                     "n": self.hill.n},
            "excess_kurtosis": self.kurtosis_summary(),
            "variance_sum": self.variance_sum, "scale_sum": self.scale_sum,
            "scale_sq_sum": self.scale_sq_sum, "grad_norm_sq": self.grad_sq,
            "scale_median": float(fit.scale[~fit.degenerate].median()),
            "snr_quantiles": {q: float(snr.quantile(v)) for q, v in
                              (("q10", 0.1), ("q50", 0.5), ("q90", 0.9))},
            "phases": self.phases,
            "omegas": {k: vars(v) for k, v in self.omegas.items()},
            "curvature": None if self.curvature is None else vars(self.curvature),
            "compute_seconds": self.compute_seconds, "notes": self.notes,
            **({"groups": {k: v.to_dict() for k, v in self.groups.items()}}
               if self.groups else {}),
            "batch_law": None if self.batch_law is None else self.batch_law.to_dict(),
            "group_batch_laws": {k: None if v is None else v.to_dict()
                                 for k, v in self.group_laws.items()},
        }


def measure_gradients(gradients: Iterable[Tensor], *, samples: int,
                      compressors: Sequence[str | Compressor] = DEFAULT_COMPRESSORS,
                      generator: torch.Generator | None = None, batch: int | None = None,
                      max_coords: int = 8000, nu_columns: int = 500,
                      omega_gradients: int = 8, block: int = 16,
                      groups: Mapping[str, Tensor] | None = None,
                      per_group: int = 2000) -> NoiseMeasurement:
    """Measure the noise of the first ``samples`` flat gradients of ``gradients`` (no L).

    Gradients are folded into the Welford moments ``block`` at a time; the ``max_coords``
    kept coordinates are drawn with ``generator``; ω̂ uses the first ``omega_gradients``.
    ``groups`` (``{name: flat indices}``) adds the per-group fits (:mod:`.groups`); their
    coordinates come from a generator of their own (seed 0), so the rest is unchanged.
    """
    samples = check_int("samples", samples, minimum=16)
    max_coords = check_int("max_coords", max_coords, minimum=1)
    omega_gradients = check_int("omega_gradients", omega_gradients, minimum=0)
    meter = OmegaMeter.of(list(compressors), generator)
    block = check_int("block", block, minimum=1)
    welford: Welford | None = None
    kept: Tensor | None = None
    pending: list[Tensor] = []
    coords = torch.empty(0, dtype=torch.long)
    count = 0
    group_coords = {} if not groups else pick_group_coordinates(
        groups, per_group, torch.Generator().manual_seed(0))
    group_kept = {k: torch.empty((samples, v.numel()), dtype=torch.float64)
                  for k, v in group_coords.items()}
    for g in gradients:
        g = g.detach().reshape(-1)
        if welford is None:
            welford = Welford(g.numel())
            coords = torch.arange(g.numel()) if g.numel() <= max_coords else \
                torch.randperm(g.numel(), generator=generator)[:max_coords].sort().values
            kept = torch.empty((samples, coords.numel()), dtype=torch.float64)
        if g.numel() != welford.d:
            raise ValueError(f"gradients must all have {welford.d} entries, got {g.numel()}")
        if not bool(torch.isfinite(g).all()):
            raise ValueError(f"gradient {count} holds NaN or inf; lower --lr or check the model")
        pending.append(g)
        if len(pending) == block:
            welford.update(torch.stack(pending))
            pending.clear()
        kept[count] = g[coords].double()  # type: ignore[index]
        for name, index in group_coords.items():
            group_kept[name][count] = g[index].double()
        if count < omega_gradients:
            meter.update(g)
        count += 1
        if count == samples:
            break
    if pending and welford is not None:
        welford.update(torch.stack(pending))
    if welford is None or count < samples:
        raise ValueError(f"samples must be at most the number of gradients available "
                         f"({count}), got {samples}")
    fit = fit_student_t(kept, nu_columns=nu_columns, generator=generator)  # type: ignore[arg-type]
    live = ~fit.degenerate
    z = (kept[:, live] - fit.loc[live]) / fit.scale[live]  # type: ignore[index]
    notes = []
    if int(fit.degenerate.sum()):
        notes.append(f"{int(fit.degenerate.sum())} of {coords.numel()} kept coordinates have no "
                     f"noise (one repeated value, e.g. dead units): left out of the fit, σ = 0")
    pooled = z.reshape(-1).abs()
    if pooled.numel() > TAIL_SAMPLE:   # for the tail plot only
        pooled = pooled[torch.randperm(pooled.numel(), generator=generator)[:TAIL_SAMPLE]]
    result = NoiseMeasurement(
        d=welford.d, samples=samples, batch=batch, mean=welford.mean,
        variance=welford.variance, excess_kurtosis=welford.excess_kurtosis, coords=coords,
        fit=fit, hill=hill(z), omegas=meter.estimates(welford.d), notes=notes,
        abs_z=pooled.sort(descending=True).values)
    if groups:
        result.groups = fit_groups(group_kept, {k: v.numel() for k, v in groups.items()},
                                   torch.Generator().manual_seed(0))
    if samples >= samples_needed():
        finite = result.finite_variance
        result.batch_law = _law(kept[:, live], batch or 1, finite)  # type: ignore[index]
        result.group_laws = {k: _law(v, batch or 1, finite) for k, v in group_kept.items()}
    else:
        notes.append(f"batch law not measured: it needs at least {samples_needed()} "
                     f"mini-batches (B, 4B, 16B means from the same samples), got {samples}; "
                     f"the rules use the Gaussian γ = ½")
    return result


def _law(samples: Tensor, batch: int, finite_variance: bool) -> BatchLaw | None:
    """γ̂ of ``samples`` (:mod:`.batch_law`), None where no coordinate has spread."""
    try:
        law = fit_batch_law(samples, batch)
    except ValueError:
        return None
    return dataclasses.replace(law, finite_variance=finite_variance)


def flat_grad(model: nn.Module) -> Tensor:
    """The gradients of the trainable parameters as one flat vector (zeros where None)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in model.parameters() if p.requires_grad])


def model_gradients(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                    batch_fn: Callable[[int], tuple[Tensor, Tensor]], *,
                    inject: NoiseLaw | None = None, generator: torch.Generator | None = None,
                    timings: list[float] | None = None) -> Iterator[Tensor]:
    """Yield the flat mini-batch gradient of batch ``batch_fn(m)`` for m = 0, 1, …

    ``inject`` adds a draw of that noise law (as is, batch 1) to every gradient — for tests and
    what-if runs. Wall time of each forward+backward is appended to ``timings``.
    """
    m = 0
    while True:
        x, y = batch_fn(m)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        g = flat_grad(model).detach().clone()
        if timings is not None:
            timings.append(time.perf_counter() - start)
        if inject is not None:
            g += inject.sample((1, g.numel()), generator, dtype=g.dtype)[0].to(g.device)
        yield g
        m += 1


def measure_model(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                  batch_fn: Callable[[int], tuple[Tensor, Tensor]], *, samples: int,
                  batch: int, curvature_data: tuple[Tensor, Tensor] | None = None,
                  inject: NoiseLaw | None = None, generator: torch.Generator | None = None,
                  curvature_iters: int = 50, **kwargs: Any) -> NoiseMeasurement:
    """Noise of ``model``'s mini-batch gradients (batches from ``batch_fn``) and L.

    L is the top eigenvalue of the Hessian of the loss on ``curvature_data`` (skipped if None).
    ``compute_seconds`` is the median time of a forward+backward, over the measured batches and
    as many more passes on the first batch as make the timed window :data:`COMPUTE_WINDOW` long
    (at most :data:`COMPUTE_EXTRA`). ``kwargs`` go to :func:`measure_gradients`.
    """
    timings: list[float] = []
    grads = model_gradients(model, loss_fn, batch_fn, inject=inject, generator=generator,
                            timings=timings)
    result = measure_gradients(grads, samples=samples, generator=generator, batch=batch,
                               **kwargs)
    if timings:                  # spread the timed window: a load spike then moves few rounds
        x, y = batch_fn(0)
        buffers = [b.clone() for b in model.buffers()]    # e.g. BatchNorm statistics
        while sum(timings) < COMPUTE_WINDOW and len(timings) < samples + COMPUTE_EXTRA:
            start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            flat_grad(model)
            timings.append(time.perf_counter() - start)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
    model.zero_grad(set_to_none=True)
    result.compute_seconds = float(torch.tensor(timings).median()) if timings else None
    if curvature_data is not None:
        x, y = curvature_data
        # the math attention kernel: the fused CPU kernels have no second derivative
        with sdpa_kernel(SDPBackend.MATH):
            hvp, dim = model_hvp(model, loss_fn(model(x), y))
            result.curvature = top_eigenvalue(hvp, dim, generator=generator,
                                              iters=curvature_iters)   # iterates on the CPU
    result.source = f"model {type(model).__name__}, batch {batch}" + \
        (f", injected {inject.spec}" if inject is not None else "")
    return result


def measure_landscape(landscape: Any, law: NoiseLaw, *, x: Tensor, samples: int,
                      batch: int = 1, generator: torch.Generator | None = None,
                      **kwargs: Any) -> NoiseMeasurement:
    """Noise of ``∇f(x) + Z`` with ``Z`` from ``law`` at batch B (σ/√B) on a test function."""
    x = torch.as_tensor(x, dtype=torch.float64)
    grad = landscape.grad(x)
    d = grad.numel()

    def draws() -> Iterator[Tensor]:
        while True:
            yield grad + law.sample((1, d), generator, batch, dtype=torch.float64)[0]

    result = measure_gradients(draws(), samples=samples, generator=generator, batch=batch,
                               **kwargs)
    result.curvature = top_eigenvalue(function_hvp(landscape.grad, x), d, generator=generator,
                                      dtype=torch.float64)
    result.source = f"landscape {landscape.spec}, noise {law.spec}, batch {batch}"
    return result
