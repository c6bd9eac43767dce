"""The scaling-rule check: simulate a baseline, a rule-following and a rule-breaking target.

A rule *recovers* the baseline when the following target's stationary loss is within
``tolerance`` (10 %) of the baseline's, and the check is *informative* when the breaking target
misses by more than ``miss`` (30 %). The simulation is pluggable: :func:`quadratic_runner` runs
:func:`compsde.simulate`; the deep-learning figures pass a runner that trains a network and
returns its final training loss the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._checks import check_float, check_int
from .solver import Recommendation


@dataclass(frozen=True)
class Arm:
    """One configuration to run: method spec, knobs, iteration count (and noise, if not the
    runner's default)."""

    label: str
    method: str
    lr: float
    batch: int
    agents: int
    steps: int
    noise: str | None = None


@dataclass
class ArmResult:
    """The loss an arm settles at (time-averaged over the tail, se over runs) and its curve."""

    arm: Arm
    level: float
    se: float
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    diverged: float = 0.0


Runner = Callable[[Arm, int], ArmResult]


@dataclass
class ScalingCheck:
    """Baseline vs rule-following vs rule-breaking, with the verdict."""

    baseline: ArmResult
    following: ArmResult
    breaking: ArmResult
    tolerance: float
    miss: float

    @property
    def follow_gap(self) -> float:
        """Relative gap of the following target's level to the baseline's."""
        return self.following.level / self.baseline.level - 1

    @property
    def break_gap(self) -> float:
        return self.breaking.level / self.baseline.level - 1

    @property
    def recovered(self) -> bool:
        return math.isfinite(self.follow_gap) and abs(self.follow_gap) <= self.tolerance

    @property
    def broken(self) -> bool:
        return not math.isfinite(self.break_gap) or abs(self.break_gap) > self.miss

    @property
    def verdict(self) -> str:
        return "pass" if self.recovered and self.broken else "fail"

    def to_dict(self) -> dict[str, Any]:
        def arm(res: ArmResult) -> dict[str, Any]:
            return asdict(res.arm) | {"level": res.level, "se": res.se,
                                      "diverged_fraction": res.diverged}
        return {"baseline": arm(self.baseline), "following": arm(self.following),
                "breaking": arm(self.breaking), "follow_gap": self.follow_gap,
                "break_gap": self.break_gap, "tolerance": self.tolerance, "miss": self.miss,
                "recovered": self.recovered, "broken": self.broken, "verdict": self.verdict}


def check_rule(baseline: Arm, following: Arm, breaking: Arm, runner: Runner, *,
               tolerance: float = 0.10, miss: float = 0.30, seed: int = 0) -> ScalingCheck:
    """Run the three arms with ``runner(arm, seed)`` (distinct seeds) and compare their levels."""
    tolerance = check_float("tolerance", tolerance, low=0.0, low_open=True)
    miss = check_float("miss", miss, low=tolerance)
    seed = check_int("seed", seed, minimum=0)
    results = [runner(arm, seed + i) for i, arm in enumerate((baseline, following, breaking))]
    return ScalingCheck(*results, tolerance=tolerance, miss=miss)


def arms_for(rec: Recommendation, steps: int) -> tuple[Arm, Arm, Arm]:
    """Baseline, rule-following (recommended knobs, steps × steps_factor under (T)) and
    rule-breaking (the target with the baseline's knobs) arms from a solver answer."""
    steps = check_int("steps", steps, minimum=1)
    b, t, u = rec.baseline, rec.target, rec.unchanged
    return (Arm("baseline", b.spec, b.lr, int(b.batch), int(b.agents), steps),
            Arm("rule-following", t.spec, t.lr, int(t.batch), int(t.agents),
                max(1, round(steps * rec.steps_factor))),
            Arm("rule-breaking", u.spec, u.lr, int(u.batch), int(u.agents), steps))


def quadratic_runner(landscape: str = "quadratic:d=5", noise: str = "gaussian:scale=1", *,
                     runs: int = 200, records: int = 100, tail: float = 0.5, x0: float = 1.0,
                     dtype: str = "float64", batch_noise: str = "scale") -> Runner:
    """A runner that simulates an arm on a test function; the level is ``tail_mean(tail)``.

    ``noise`` is used for arms whose own ``noise`` is None; ``batch_noise`` is how a batch is
    drawn (THEORY.md §1a).
    """
    from ..simulation import simulate

    def run(arm: Arm, seed: int) -> ArmResult:
        result = simulate(arm.method, landscape, arm.noise or noise, lr=arm.lr, steps=arm.steps,
                          agents=arm.agents, batch=arm.batch, runs=runs, seed=seed, x0=x0,
                          dtype=dtype, record_every=max(1, arm.steps // records),
                          batch_noise=batch_noise)
        level, se = result.tail_mean(tail)
        return ArmResult(arm, level, se, result.steps, result.loss_mean,
                         result.diverged_fraction)

    return run
