"""compsde.verdicts: two-sided and one-sided checks, budgets, and the deciding check of a panel."""

from __future__ import annotations

import math

import pytest

from compsde.verdicts import Budget, check, panel, summary, tolerance_of

BUDGET = Budget("first-order model", 0.02, "THEORY.md §4")


def test_equal_check_is_two_sided_with_se_and_budget():
    tol = 4 * 0.01 + 0.02 * 4.0
    assert tolerance_of(4.0, se=0.01, budget=BUDGET) == pytest.approx(tol)
    assert check("r", 4.0 + 0.99 * tol, 4.0, se=0.01, budget=BUDGET)["verdict"] == "pass"
    assert check("r", 4.0 - 0.99 * tol, 4.0, se=0.01, budget=BUDGET)["verdict"] == "pass"
    assert check("r", 4.0 + 1.01 * tol, 4.0, se=0.01, budget=BUDGET)["verdict"] == "fail"
    assert check("r", 4.0 - 1.01 * tol, 4.0, se=0.01, budget=BUDGET)["verdict"] == "fail"


def test_one_sided_checks():
    assert check("q", 5.0, 4.0, relation="at_most", absolute=1.0)["verdict"] == "pass"
    assert check("q", 5.1, 4.0, relation="at_most", absolute=1.0)["verdict"] == "fail"
    assert check("q", -100.0, 4.0, relation="at_most", k=0.0)["verdict"] == "pass"
    assert check("q", 3.0, 4.0, relation="at_least", absolute=1.0)["verdict"] == "pass"
    assert check("q", 2.9, 4.0, relation="at_least", absolute=1.0)["verdict"] == "fail"


def test_non_finite_measurements():
    assert check("q", math.nan, 1.0)["verdict"] == "fail"
    assert check("q", math.nan, 1.0, relation="at_least")["verdict"] == "fail"
    assert check("q", math.inf, 1.0)["verdict"] == "fail"
    assert check("q", math.inf, 1.0, relation="at_most")["verdict"] == "fail"
    assert check("q", math.inf, 1.0, relation="at_least")["verdict"] == "pass"
    assert check("q", -math.inf, 1.0, relation="at_least")["verdict"] == "fail"


def test_every_check_records_the_judged_quantity():
    entry = check("plateau", 1.0, 1.1, se=0.01, budget=BUDGET)
    assert {"quantity", "measured", "predicted", "tolerance", "margin", "rule", "budget",
            "relation", "verdict"} <= set(entry)
    assert entry["budget"]["name"] == "first-order model"
    assert "4·se" in entry["rule"] and "first-order model" in entry["rule"]
    assert "plateau" in summary(entry) and "fail" in summary(entry)


def test_panel_reports_the_failing_or_tightest_check():
    loose = check("loose", 0.0, 0.0, absolute=10.0)
    tight = check("tight", 0.9, 0.0, absolute=1.0)
    wrong = check("wrong", 2.0, 0.0, absolute=1.0)
    assert panel([loose, tight])["quantity"] == "tight"
    judged = panel([loose, tight, wrong], detail="x")
    assert judged["verdict"] == "fail" and judged["quantity"] == "wrong"
    assert judged["detail"] == "x" and len(judged["checks"]) == 3


@pytest.mark.parametrize("bad", [
    dict(relation="equals"), dict(se=-1.0), dict(k=-1.0), dict(absolute=-0.1)])
def test_bad_input_names_the_parameter(bad):
    with pytest.raises(ValueError, match=r"relation|se|k|absolute"):
        check("q", 1.0, 1.0, **bad)


def test_empty_panel_and_negative_budget_are_refused():
    with pytest.raises(ValueError, match="check"):
        panel([])
    with pytest.raises(ValueError, match="relative"):
        Budget("b", -0.1, "why")
