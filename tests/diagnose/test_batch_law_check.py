"""The simulated batch law and the rules' verdicts pass on the real code (THEORY.md §5a).

The verdicts' tolerances are k·se plus the module's named pre-asymptotic budget; here they run
with 2000 pairs per point (se about 0.015 in γ̂), enough to tell γ = 0, 1/3 and ½ apart.
"""

from __future__ import annotations

import pytest

from compsde.diagnose import batch_law_check as check


def test_real_code_passes_both_panels():
    result = check.judge(pairs=2000, seed=0)
    assert result["law"]["verdict"] == "pass", result["law"]
    assert result["rules"]["verdict"] == "pass", result["rules"]
    fits = result["fits"]
    # the panels can tell: Cauchy's exponent is many se away from the Gaussian one
    cauchy = fits["student-t:nu=1,scale=1"]
    assert 0.5 - cauchy["gamma"] > 10 * cauchy["se"]
    assert "PASS" in check.lines(result)


def test_theory_gamma():
    assert check.theory_gamma("student-t:nu=1.5,scale=1") == pytest.approx(1 / 3)
    assert check.theory_gamma("student-t:nu=1,scale=2") == 0.0
    assert check.theory_gamma("student-t:nu=3,scale=1") == 0.5
    assert check.theory_gamma("gaussian:scale=1") == 0.5
    with pytest.raises(ValueError, match="nu = 2"):
        check.theory_gamma("student-t:nu=2,scale=1")


def test_bad_input():
    with pytest.raises(ValueError, match="pairs"):
        check.judge(pairs=10)
