"""EF21 against its exact discrete moments instead of an SDE (THEORY.md §8b).

EF21 with a mask compressor (identity, Rand-k, Bernoulli) on a diagonal quadratic has exact
second moments (:mod:`compsde.theory.ef21`): :func:`validate_exact` judges the algorithm's mean
loss curve against ``E f_k`` at every record and its late-window mean against the stationary
level; :func:`compsde.validate.validate` sends EF21 here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import check_choice, check_float, check_int
from .recording import RunResult
from .simulation import simulate
from .validate import Z_DEFAULT, Validation, compare_curves
from .verdicts import Budget, check, panel


@dataclass
class ExactValidation(Validation):
    """The algorithm against its exact discrete moments (EF21, THEORY.md §8b): the mean curve
    at every record within ``z`` se (no model budget: the formula is exact), and the mean over
    the last half of the records against the stationary loss."""

    stationary: dict[str, Any] | None = None
    reference_label = "exact E f_k"

    @property
    def judgement(self) -> dict[str, Any]:
        z = self.stats["z"]
        excess, step = self._mean_excess()
        checks = [check("largest gap between the mean curve and the exact E f_k, in se",
                        excess, 0.0, relation="at_most", k=0.0, absolute=z,
                        rule=f"at every record |mean_algorithm − exact E f_k| ≤ {z:g}·se "
                             f"(exact discrete second moments, THEORY.md §8b; worst at step "
                             f"{step})")]
        if self.stationary is not None and self.stationary.get("check") is not None:
            checks.append(self.stationary["check"])
        return panel(checks)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["reference"] = "exact"
        out["exact"] = out.pop("sde")
        out["exact_config"] = out.pop("sde_config")
        if self.stationary is not None:
            out["stationary"] = {k: v for k, v in self.stationary.items() if k != "check"}
        return out


EXACT_METHODS = ("ef21",)   # feedback kinds judged against exact moments (THEORY.md §8b)


def exact_reference(method: Any) -> str | None:
    """``"ef21"`` when ``method`` is judged against exact moments instead of an SDE."""
    from .methods import Method, make

    built = method if isinstance(method, Method) else make(method)
    return built.feedback if built.feedback in EXACT_METHODS else None


def exact_model(method: str, landscape: str, noise: str, *, lr: float,
                **common: Any) -> Any:
    """The exact model :func:`validate_exact` judges against (THEORY.md §8b), built and checked
    before any work: ValueError for Top-k/scaled sign (no closed form), a non-diagonal
    quadratic, noise without variance or a non-constant ``lr_schedule``."""
    from .theory.ef21 import EF21Quadratic

    check_choice("lr_schedule", common.get("lr_schedule", "constant"), ("constant",))
    return EF21Quadratic.from_problem(method, landscape, noise, lr=lr,
                                      agents=common.get("agents", 1),
                                      batch=common.get("batch", 1), x0=common.get("x0", 1.0))


def validate_exact(method: str, landscape: str, noise: str, *, lr: float, steps: int,
                   runs: int = 500, z: float = Z_DEFAULT, batch_noise: str = "scale",
                   **common: Any) -> ExactValidation:
    """EF21 (mask compressor, diagonal quadratic) against its exact ``E f_k`` (THEORY.md §8b).

    The mean curve must lie within ``z`` se of ``E f_k`` at every record; when the recursion
    is mean-square stable, the mean over the last half of the records (se from the per-run
    time averages: runs are independent, records within a run are not) must equal the
    stationary loss within ``z`` se plus the exact curve's own distance from it over that
    window (``transient`` budget, computed from the theory before the run).
    """
    from .recording import record_schedule

    z = check_float("z", z, low=0.0, low_open=True)
    runs = check_int("runs", runs, minimum=2)
    model = exact_model(method, landscape, noise, lr=lr, **common)
    steps = check_int("steps", steps, minimum=1, text=False)
    marks = record_schedule(steps, check_int("record_every", common.get("record_every", 1),
                                             minimum=1, text=False))
    exact = model.loss_curve(marks)
    stable = bool(model.stable().all())
    level = model.stationary_loss() if stable else math.inf
    window = slice(min(int(len(marks) * 0.5), len(marks) - 1), None)
    settle = float(np.max(np.abs(exact[window] - level)) / level) \
        if stable and level > 0 else math.inf
    alg = simulate(method, landscape, noise, lr=lr, steps=steps, runs=runs,
                   batch_noise=batch_noise, **common)
    if not np.array_equal(alg.steps, marks):
        raise RuntimeError("the simulator recorded other steps than the exact curve")
    reference = RunResult(steps=alg.steps, time=alg.time, losses=exact[:, None],
                          config={"kind": "exact", "method": alg.config["method"],
                                  "model": "EF21 exact second moments (THEORY.md §8b)",
                                  "mean_square_stable": stable, "stationary_loss": level})
    stationary: dict[str, Any] = {"stable": stable, "stationary_loss": level,
                                  "window_start_step": int(marks[window][0]),
                                  "transient_relative": settle, "check": None}
    if stable and math.isfinite(settle):
        measured, se = alg.tail_mean(0.5)
        budget = Budget("transient", settle,
                        "THEORY.md §8b: the exact E f_k's largest relative distance from the "
                        "stationary level over the window (from the theory, before the run)")
        stationary["check"] = check(
            "mean loss over the last half of the records", measured, level, se=se, k=z,
            budget=budget,
            rule=f"time-averaged mean loss over steps ≥ {int(marks[window][0])} = the "
                 f"stationary E f of the exact recursion within {z:g}·se (per-run time "
                 f"averages) + {settle:.3g}·level (transient)")
    else:
        stationary["reason"] = ("not mean-square stable at this lr: no stationary level "
                                "(THEORY.md §8b)")
    return ExactValidation(alg, reference, compare_curves(alg, reference, z), spread=None,
                           first_order_source="none: exact discrete second moments",
                           stationary=stationary)
