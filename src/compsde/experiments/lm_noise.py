"""Measured gradient noise per parameter group, for the language model and the image models.

One *noise run* warms a ``compsde.nn`` model up with plain SGD and measures M mini-batch
gradients (:func:`compsde.advise.model.measure_dataset`, no curvature): the Student-t tail
index ν̂ of the whole model and of each parameter group with their standard errors, the Hill
index and the DSignSGD phases (THEORY.md §1, §3, §6; :mod:`compsde.diagnose.groups`). Results
are stored on the ξ = 1/ν scale as well (ξ = 0 is Gaussian), where the estimator's standard
error is computed and which stays finite in JSON.

:func:`plot_comparison` draws ν̂ ± 1.96 se per group for every measured model side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NOISE_VERSION = "lm-noise-1"


@dataclass(frozen=True)
class NoiseSpec:
    """One noise measurement: model, data, batch B, warm-up lr and steps, M samples, seed."""

    label: str
    model: str
    data: str
    batch: int
    lr: float
    warmup: int
    samples: int
    seed: int
    per_group: int = 2000

    def config(self) -> dict[str, Any]:
        return {"kind": "noise", "version": NOISE_VERSION, **asdict(self)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NoiseSpec:
        return cls(**{k: v for k, v in config.items() if k not in ("kind", "version")})


def _xi(nu: float) -> float:
    return 0.0 if math.isinf(nu) else 1.0 / nu


def measure(spec: NoiseSpec) -> dict[str, Any]:
    """Run the measurement of ``spec``; a JSON-ready summary (module docstring)."""
    from ..advise.model import measure_dataset

    m = measure_dataset(spec.model, spec.data, batch=spec.batch, lr=spec.lr,
                        samples=spec.samples, warmup=spec.warmup, curvature_batch=0,
                        seed=spec.seed, compressors=[])
    fit = m.fit
    groups = {name: {"size": g.size, "kept": g.kept, "sparse": g.sparse,
                     "xi": None if math.isnan(g.nu) else _xi(g.nu), "xi_se": g.xi_se,
                     "nu": g.nu, "nu_se": g.nu_se, "hill_alpha": g.hill_alpha,
                     "hill_se": g.hill_se, "phases": g.phases}
              for name, g in m.groups.items()}
    return {"label": spec.label, "source": m.source, "dim": m.d, "nu": fit.nu,
            "nu_se": fit.nu_se, "xi": _xi(fit.nu), "xi_se": fit.xi_se,
            "nu_interval": list(fit.nu_interval), "hill_alpha": m.hill.alpha,
            "hill_se": m.hill.se, "finite_variance": m.finite_variance,
            "variance_verdict": m.variance_verdict(), "phases": m.phases, "groups": groups}


def noise_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`measure` of a cached config (a module-level function: picklable for workers)."""
    return measure(NoiseSpec.from_config(config))


def nu_text(xi: float | None, xi_se: float | None) -> str:
    """``ν̂ ± se`` from ξ = 1/ν̂ and se(ξ̂) (delta method: se(ν̂) = se(ξ̂)/ξ̂²)."""
    if xi is None:
        return "—"
    if xi <= 0:
        return "∞ (Gaussian)"
    nu = 1.0 / xi
    return f"{nu:.3g} ± {xi_se / xi ** 2:.2g}" if xi_se else f"{nu:.3g}"


def plot_comparison(ax: Any, results: Sequence[Mapping[str, Any]]) -> None:
    """ν̂ per parameter group and model with 95 % intervals (drawn on the ξ = 1/ν axis, where
    the intervals are symmetric, labelled in ν); the line ν = 2 separates infinite variance."""
    colors = ("tab:purple", "tab:blue", "tab:orange", "tab:green")
    names: list[str] = []
    for r in results:
        names += [g for g in r["groups"] if g not in names]
    width = 0.8 / max(len(results), 1)
    for k, r in enumerate(results):
        xs, ys, lo, hi = [], [], [], []
        for i, name in enumerate(names):
            g = r["groups"].get(name)
            if g is None or g["xi"] is None:
                continue
            se = g["xi_se"] or 0.0
            xs.append(i + (k - (len(results) - 1) / 2) * width)
            ys.append(g["xi"])
            lo.append(min(1.96 * se, g["xi"]))
            hi.append(1.96 * se)
        whole = nu_text(r["xi"], r["xi_se"])
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, color=colors[k % len(colors)],
                    label=f"{r['label']} (whole model ν̂ = {whole})")
    ax.axhline(0.5, color="k", ls="--", lw=1, label="ν = 2: infinite variance above")
    ax.set_xticks(range(len(names)), names)
    ticks = np.array([0.0, 0.1, 0.25, 0.5, 1.0, 1.5])
    top = max([0.6] + [g["xi"] + 1.96 * (g["xi_se"] or 0) for r in results
                       for g in r["groups"].values() if g["xi"] is not None])
    ticks = ticks[ticks <= top * 1.05]
    ax.set_yticks(ticks, ["∞" if t == 0 else f"{1 / t:.3g}" for t in ticks])
    ax.set_ylim(-0.02, top * 1.08)
    ax.set_ylabel("tail index ν̂ (axis in ξ = 1/ν; heavier tails up)")
    ax.set_title("measured gradient noise per parameter group (Student-t ν̂, 95 % interval)",
                 fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper right")
