"""`compsde scale`'s check against a wrong solver, and a rule that is deliberately broken."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutants

from compsde.cli import main

README = ["scale", "--baseline", "dsgd", "--lr", "0.1", "--batch", "32", "--agents", "8",
          "--target", "dcsgd:randk:ratio=0.1", "--vary", "batch", "--L", "2.0"]
# η L ω/(2N) = 0.45 at N = 1: dropping it (--first-order) recommends B = 10 where 18 is needed
BROKEN = ["scale", "--baseline", "dsgd", "--lr", "0.1", "--batch", "1", "--agents", "1",
          "--target", "dcsgd:omega=9", "--vary", "batch", "--L", "1", "--first-order"]


def scale(argv: list[str], out: Path) -> tuple[int, dict]:
    code = main([*argv, "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == (0 if result["verdict"] == "pass" else 1)
    return code, result


def test_real_solver_passes_the_readme_example(tmp_path):
    code, result = scale(README, tmp_path)
    assert code == 0 and result["check"]["arms"]["recommended"]["batch"] == 361
    assert result["check"]["unchanged_ratio"] > 5      # the check can tell: 1+ω ≈ 10 apart


def test_solver_without_one_plus_omega_fails(monkeypatch, caught, tmp_path):
    mutants.solver_level_without_one_plus_omega(monkeypatch)
    _, result = scale(README, tmp_path)
    caught(result["verdict"])


@pytest.mark.parametrize("mutant", ["solver_level_with_one_plus_omega_squared",
                                    "solver_level_without_rho"])
def test_solver_with_a_wrong_level_fails(mutant, monkeypatch, caught, tmp_path):
    """(1 + ω)² over-compensates ×10; without ρ (ηLω/(2N) = 0.11 here) the batch is 11 % short."""
    getattr(mutants, mutant)(monkeypatch)
    _, result = scale(README, tmp_path)
    caught(result["verdict"])


def test_deliberately_broken_rule_fails(caught, tmp_path):
    """--first-order drops a 45 % term here: the recommendation does not recover the level."""
    code, result = scale(BROKEN, tmp_path)
    assert code == 1
    caught(result["verdict"])
