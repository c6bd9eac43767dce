"""The simulated batch-law verdicts (compsde.diagnose.batch_law_check) against wrong pieces.

- the simulator's ``batch_noise="mean"`` path replaced by the σ/√B convention: the law panel
  sees γ̂ = ½ for Cauchy noise and must fail;
- the noise-compensation rule that ignores γ (B → α²B whatever γ is passed): the γ̂ rule no
  longer compensates heavy-tailed noise and the rule panel must fail.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutants

from compsde.diagnose import batch_law_check
from compsde.noise import NoiseLaw
from compsde.scaling import rules

PAIRS = 2000


def mean_drawn_by_the_convention(monkeypatch: Any) -> None:
    """Batch means drawn once at σ/√B (the convention), not as the mean of B draws."""

    def wrong(original: Any) -> Any:
        def draw(self: Any, shape: Any, generator: Any, batch: int, dtype: Any,
                 device: Any) -> Any:
            return NoiseLaw._draw_scaled(self, shape, generator, batch, dtype, device)

        return draw

    mutants.mutate(monkeypatch, NoiseLaw, "_draw_mean", wrong)
    monkeypatch.setitem(NoiseLaw._BATCH_DRAWS, "mean", NoiseLaw._draw_mean)


def compensation_ignores_gamma(monkeypatch: Any) -> None:
    """``noise_compensation`` returns α²B for every γ."""

    def wrong(original: Any) -> Any:
        def compensate(batch: float, alpha: float, gamma: float = 0.5) -> float:
            return original(batch, alpha)

        return compensate

    mutants.mutate(monkeypatch, rules, "noise_compensation", wrong)


def test_real_code_passes():
    assert batch_law_check.judge(pairs=PAIRS)["verdict"] == "pass"


def test_convention_instead_of_means_fails(monkeypatch, caught):
    mean_drawn_by_the_convention(monkeypatch)
    caught(batch_law_check.judge(pairs=PAIRS)["law"]["verdict"])


def test_rule_without_gamma_fails(monkeypatch, caught):
    compensation_ignores_gamma(monkeypatch)
    caught(batch_law_check.judge(pairs=PAIRS)["rules"]["verdict"])
