"""Scaling rules: how lr, batch and agents must change when compression is switched on (§5).

- :mod:`.rules` — the closed-form rules (DSGD, DCSGD recovering DSGD, DSignSGD, noise);
- :func:`solve` — given a baseline and the knobs one may change, recommended values and which
  properties (stationary loss, speed per time (T), speed per iteration (K)) are matched;
- :func:`check_rule` — simulate baseline, rule-following and rule-breaking runs and say whether
  the rule recovers the baseline's loss (reused by the deep-learning figures with their runner).
"""

from .check import Arm, ArmResult, ScalingCheck, arms_for, check_rule, quadratic_runner
from .rules import (
    CONVENTIONS,
    Hyper,
    Rule,
    dcsgd_from_dsgd,
    dsgd_rules,
    dsignsgd_rules,
    heterogeneity_factor,
    noise_compensation,
)
from .solver import KNOBS, Recommendation, Setup, level, resolve_method, solve, speed

__all__ = [
    "CONVENTIONS",
    "KNOBS",
    "Arm",
    "ArmResult",
    "Hyper",
    "Recommendation",
    "Rule",
    "ScalingCheck",
    "Setup",
    "arms_for",
    "check_rule",
    "dcsgd_from_dsgd",
    "dsgd_rules",
    "dsignsgd_rules",
    "heterogeneity_factor",
    "level",
    "noise_compensation",
    "quadratic_runner",
    "resolve_method",
    "solve",
    "speed",
]
