"""`compsde validate` on Signum's pair SDE (THEORY.md §8a): the real SDE passes, wrong ones fail.

The comparison is at sub-steps h = η/8 with the first-order budget of an lr sweep at fixed
c = (1 − β)/η (the weak error at T = 0.16, where it peaks, falls like η: measured slope 0.97).
A momentum relaxing at c/2, or an x-drift along the sign of the mean momentum instead of the
mean of the signs (N = 3), is an O(1) model error: the sweep's slope or the mean gap fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutants
import pytest

from compsde.cli import main
from compsde.sde import momentum

ARGV = ["validate", "--method", "signum:beta=0.8", "--landscape", "quadratic:d=2", "--noise",
        "gaussian", "--agents", "3", "--x0", "1.5", "--lr", "0.04", "--steps", "60",
        "--runs", "1500", "--record-every", "2", "--lr-sweep", "0.08,0.04,0.02,0.01",
        "--horizon", "0.16", "--no-progress"]


def verdict(out: Path) -> str:
    """The command's verdict: the comparison and the sweep must both pass (exit 0)."""
    code = main([*ARGV, "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    ok = result["verdict"] == "pass" and result["lr_sweep"]["verdict"] == "pass"
    assert code == (0 if ok else 1)
    return "pass" if ok else "fail"


def test_real_code_passes(tmp_path):
    assert verdict(tmp_path) == "pass"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["sde_config"]["momentum_rate_c"] == pytest.approx(5.0)
    assert result["sde_config"]["substeps"] == 8


def half_relaxation_rate(monkeypatch: Any) -> None:
    """The momenta relax at c/2 (and diffuse with c/2 √η Σ^{1/2})."""
    mutants.mutate(monkeypatch, momentum, "relaxation_rate",
                   lambda original: lambda beta, lr: 0.5 * original(beta, lr))


def sign_of_mean_momentum(monkeypatch: Any) -> None:
    """dx = −sign(mean_i m_i) dt in place of −mean_i sign(m_i) dt."""

    def wrong(original: Any) -> Any:
        def direction(m: Any, vote: bool) -> Any:
            mean = m.mean(dim=-2)
            return (mean >= 0).to(m.dtype).mul_(2.0).sub_(1.0)

        return direction

    mutants.mutate(monkeypatch, momentum, "direction", wrong)


@pytest.mark.parametrize("mutant", [half_relaxation_rate, sign_of_mean_momentum])
def test_wrong_pair_sde_fails(monkeypatch, caught, tmp_path, mutant):
    mutant(monkeypatch)
    caught(verdict(tmp_path))
