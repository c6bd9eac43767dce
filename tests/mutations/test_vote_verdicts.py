"""`compsde validate` on the majority vote: the real SDE passes, a wrong vote drift fails.

The vote's drift P(K > N/2) − P(K < N/2) (THEORY.md §8) amplifies the agents' agreement: the
mean of signs' drift in its place, or the odd-N formula at an even N (a tie counted as −1),
moves the mean curve by many standard errors at these sizes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutants

from compsde.cli import main


def argv(agents: int) -> list[str]:
    return ["validate", "--method", "dsignsgd:vote=majority", "--landscape", "quadratic:d=4",
            "--noise", "gaussian:scale=1", "--agents", str(agents), "--x0", "2", "--lr",
            "0.02", "--steps", "150", "--runs", "1500", "--no-progress"]


def verdict(agents: int, out: Path) -> str:
    code = main([*argv(agents), "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == (0 if result["verdict"] == "pass" else 1)
    return result["verdict"]


def test_real_code_passes_for_odd_and_even_agents(tmp_path):
    assert verdict(3, tmp_path / "odd") == "pass"
    assert verdict(4, tmp_path / "even") == "pass"


def test_mean_of_signs_drift_in_the_vote_fails(monkeypatch, caught, tmp_path):
    mutants.vote_drift_is_mean_of_signs(monkeypatch)
    caught(verdict(3, tmp_path))


def test_odd_formula_at_even_agents_fails(monkeypatch, caught, tmp_path):
    mutants.vote_tie_term_dropped(monkeypatch)
    caught(verdict(4, tmp_path))
