"""`compsde validate` on EF21: the exact moments pass, known-wrong theory fails (THEORY.md §8b).

The verdict judges the algorithm's mean loss against the exact E f_k of the second-moment
recursion at every record (4·se, no model budget) and its late mean against the stationary
level. Forgetting EF21's 1/(1+ω) (C' = C: gain d/k on the kept coordinate) or the q(1 − q)
term of E[A M Aᵀ] (the mask's variance) each moves the predicted curve by many se.
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
from compsde.theory import ef21

ARGV = ["validate", "--method", "ef21:randk:k=1", "--landscape", "quadratic:eig=0.5/1/2/3",
        "--noise", "gaussian:scale=1/2/3", "--agents", "3", "--batch", "4", "--lr", "0.05",
        "--steps", "400", "--runs", "600", "--record-every", "10", "--no-progress"]


def verdict(out: Path, argv: list[str] = ARGV) -> str:
    code = main([*argv, "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == (0 if result["verdict"] == "pass" else 1)
    return result["verdict"]


def test_real_code_passes(tmp_path):
    assert verdict(tmp_path / "randk") == "pass"
    bern = [a if a != "ef21:randk:k=1" else "ef21:bernoulli:p=0.25" for a in ARGV]
    assert verdict(tmp_path / "bernoulli", bern) == "pass"
    result = json.loads((tmp_path / "randk" / "result.json").read_text())
    assert result["reference"] == "exact" and len(result["checks"]) == 2


def forgot_one_over_one_plus_omega(monkeypatch: Any) -> None:
    """The theory models C' = C (the scaled mask, gain 1/q) instead of C/(1 + ω)."""
    mutants.mutate(monkeypatch, ef21, "mask_law",
                   lambda original: lambda comp, d: (original(comp, d)[0],
                                                     1.0 / original(comp, d)[0]))


def dropped_mask_variance(monkeypatch: Any) -> None:
    """E[A M Aᵀ] = Ā M Āᵀ only: the Σ_i q_i(1 − q_i) A_i M A_iᵀ term dropped."""

    def wrong(original: Any) -> Any:
        def pieces(self: Any, rows: Any) -> Any:
            abar, c, r, q, v, noise = original(self, rows)
            return abar, c, r, q, 0.0 * v, noise

        return pieces

    mutants.mutate(monkeypatch, ef21.EF21Quadratic, "_pieces", wrong)


@pytest.mark.parametrize("mutant", [forgot_one_over_one_plus_omega, dropped_mask_variance])
def test_wrong_theory_fails(monkeypatch, caught, tmp_path, mutant):
    mutant(monkeypatch)
    caught(verdict(tmp_path))


def test_topk_and_scaledsign_are_refused_in_one_line(tmp_path, capsys):
    for spec in ("ef21:topk:k=1", "ef21:scaledsign"):
        argv = [a if a != "ef21:randk:k=1" else spec for a in ARGV]
        assert main([*argv, "--out", str(tmp_path / spec.replace(":", "_"))]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "no closed form is derived" in err
        assert not (tmp_path / spec.replace(":", "_") / "result.json").exists()
