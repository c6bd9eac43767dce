"""Verdicts: a claim's own quantity against a tolerance fixed before the run (docs/THEORY.md §10).

A :func:`check` compares one ``measured`` quantity with its ``predicted`` value:

- ``equal`` (the claim is an equality): pass when ``|measured − predicted| ≤ tolerance``;
- ``at_most`` / ``at_least`` (the claim is an inequality): pass when
  ``measured ≤ predicted + tolerance`` / ``measured ≥ predicted − tolerance``.

``tolerance = k · se + budget.relative · |predicted| + absolute``: ``k`` standard errors of the
measurement (Monte-Carlo noise) plus, where a first-order model has a known bias, a named
:class:`Budget` whose size and justification (a THEORY.md section) are constants of the module
that makes the claim. Nothing in a tolerance is computed from the measured discrepancy.

A :func:`panel` holds one or more checks; it passes when all of them pass, and reports the
deciding check (the failing one, else the one with the least margin) at its top level, so every
panel's JSON has ``verdict``, ``quantity``, ``measured``, ``predicted``, ``tolerance``,
``margin`` and ``rule``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

RELATIONS = ("equal", "at_most", "at_least")
K_DEFAULT = 4.0  # standard errors: a two-sided false-alarm rate of 6e-5 per Gaussian check


@dataclass(frozen=True)
class Budget:
    """A model-error budget: ``relative · |predicted|`` allowed for a known bias of the model."""

    name: str
    relative: float
    why: str

    def __post_init__(self) -> None:
        if not (self.relative >= 0 and math.isfinite(self.relative)):
            raise ValueError(f"budget {self.name!r}: relative must be finite and >= 0, "
                             f"got {self.relative}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "relative": self.relative, "why": self.why}


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def tolerance_of(predicted: float, se: float = 0.0, k: float = K_DEFAULT,
                 budget: Budget | None = None, absolute: float = 0.0) -> float:
    """``k · se + budget.relative · |predicted| + absolute`` (fixed before the measurement)."""
    if not (se >= 0 and k >= 0 and absolute >= 0):
        raise ValueError(f"se, k and absolute must be >= 0, got se={se}, k={k}, "
                         f"absolute={absolute}")
    relative = budget.relative * abs(predicted) if budget is not None else 0.0
    return k * se + relative + absolute


def check(quantity: str, measured: float, predicted: float, *, relation: str = "equal",
          se: float = 0.0, k: float = K_DEFAULT, budget: Budget | None = None,
          absolute: float = 0.0, rule: str | None = None) -> dict[str, Any]:
    """Judge ``measured`` against ``predicted`` by ``relation`` (see the module docstring).

    A NaN measurement fails every relation; ``±inf`` compares as a number (a diverged loss is
    ``inf``: it fails ``equal`` and ``at_most`` and passes ``at_least``).
    """
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {', '.join(RELATIONS)}, got {relation!r}")
    measured, predicted = float(measured), float(predicted)
    tol = tolerance_of(predicted, se, k, budget, absolute)
    if relation == "equal":
        margin = tol - abs(measured - predicted)
        sentence = f"|measured − predicted| ≤ {k:g}·se"
    elif relation == "at_most":
        margin = predicted + tol - measured
        sentence = f"measured ≤ predicted + {k:g}·se"
    else:
        margin = measured - (predicted - tol)
        sentence = f"measured ≥ predicted − {k:g}·se"
    if budget is not None:
        sentence += f" + {budget.relative:g}·|predicted| ({budget.name})"
    if absolute:
        sentence += f" + {_fmt(absolute)}"
    ok = not math.isnan(measured) and not math.isnan(margin) and margin >= 0
    if math.isnan(margin) and math.isinf(measured):  # inf − inf: decided by the sign alone
        ok = (relation == "at_least") == (measured > 0)
        margin = math.inf if ok else -math.inf
    return {"verdict": "pass" if ok else "fail", "quantity": quantity, "measured": measured,
            "predicted": predicted, "relation": relation, "tolerance": tol, "margin": margin,
            "se": float(se), "k": float(k),
            "budget": budget.to_dict() if budget is not None else None,
            "rule": rule or f"{quantity}: {sentence}"}


def _slack(entry: dict[str, Any]) -> float:
    """Margin in units of the tolerance (so checks on different scales compare)."""
    margin, tol = entry["margin"], entry["tolerance"]
    if math.isnan(margin):
        return -math.inf
    scale = tol if tol > 0 else max(abs(entry["predicted"]), 1e-300)
    return margin / scale


def panel(checks: Sequence[dict[str, Any]], rule: str | None = None,
          **detail: Any) -> dict[str, Any]:
    """A panel's verdict: every check passes. The deciding check's fields sit at the top."""
    if not checks:
        raise ValueError("a panel needs at least one check")
    failing = [c for c in checks if c["verdict"] != "pass"]
    deciding = failing[0] if failing else min(checks, key=_slack)
    top = {key: deciding[key] for key in ("quantity", "measured", "predicted", "relation",
                                          "tolerance", "margin")}
    return {"verdict": "fail" if failing else "pass", **top,
            "rule": rule or deciding["rule"], "checks": list(checks), **detail}


def summary(entry: dict[str, Any]) -> str:
    """One line: quantity, measured vs predicted, tolerance and margin."""
    sign = {"equal": "≈", "at_most": "≤", "at_least": "≥"}[entry.get("relation", "equal")]
    return (f"{entry['quantity']}: {_fmt(entry['measured'])} {sign} {_fmt(entry['predicted'])} "
            f"(tolerance {_fmt(entry['tolerance'])}, margin {_fmt(entry['margin'])}) "
            f"→ {entry['verdict']}")
