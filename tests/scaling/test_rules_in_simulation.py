"""Every scaling rule recovers the baseline's stationary loss within 10 % in simulation, while a
rule-breaking target misses by more than 30 % (§5). Quadratic ½‖x‖², d = 5, σ = 1, x0 = 0
(no transient), runs over SDE time t = 10 (tail t ∈ [5, 10]); configurations where the
rule-breaking gap is a factor 2–4."""

from __future__ import annotations

import math

import pytest

from compsde.scaling import (
    Arm,
    arms_for,
    check_rule,
    dsgd_rules,
    dsignsgd_rules,
    noise_compensation,
    quadratic_runner,
    solve,
)

TIME = 10.0
RUNNER = quadratic_runner("quadratic:d=5", "gaussian:scale=1", runs=200, records=100, x0=0.0)


def _arm(label: str, method: str, lr: float, batch: float, agents: float,
         noise: str | None = None) -> Arm:
    assert float(batch).is_integer() and float(agents).is_integer()
    return Arm(label, method, lr, int(batch), int(agents), math.ceil(TIME / lr), noise)


def _assert_check(check) -> None:
    for res in (check.baseline, check.following, check.breaking):
        assert res.se <= 0.03 * res.level, res    # 10 % / 30 % are resolvable
        assert res.diverged == 0
    assert check.recovered, check.to_dict()
    assert check.broken, check.to_dict()
    assert check.verdict == "pass"


@pytest.mark.parametrize("vary", ["batch", "agents", "lr", "batch,agents"])
def test_dcsgd_rules_recover_dsgd(vary):
    rec = solve("dsgd", lr=0.02, batch=2, agents=2, target="dcsgd:bernoulli:p=0.25", vary=vary,
                L=1.0, convention="T")
    assert rec.matched["stationary_loss"]
    base, follow, broken = arms_for(rec, math.ceil(TIME / 0.02))
    check = check_rule(base, follow, broken, RUNNER, seed=1)
    _assert_check(check)


@pytest.mark.parametrize("convention", ["T", "K"])
def test_dsgd_rules(convention):
    base = _arm("baseline", "dsgd", 0.02, 2, 2)
    rule = dsgd_rules(0.02, 2, 2, 2.0 if convention == "T" else 0.5, convention)[0]
    c = rule.config
    follow = _arm("rule-following", "dsgd", c.lr, c.batch, c.agents)
    # breaking: change the same knob as the rule's first one without compensating
    broken = _arm("rule-breaking", "dsgd", c.lr, 2, c.agents) if convention == "T" \
        else _arm("rule-breaking", "dsgd", c.lr, 2, 1)
    _assert_check(check_rule(base, follow, broken, RUNNER, seed=3))


@pytest.mark.parametrize("convention", ["T", "K"])
def test_dsignsgd_rules(convention):
    base = _arm("baseline", "dsignsgd", 0.01, 4, 2)
    c = dsignsgd_rules(0.01, 4, 2, 2.0, convention).config
    follow = _arm("rule-following", "dsignsgd", c.lr, c.batch, c.agents)
    broken = _arm("rule-breaking", "dsignsgd", c.lr, 4, 2)   # lr scaled, nothing compensates
    _assert_check(check_rule(base, follow, broken, RUNNER, seed=5))


@pytest.mark.parametrize("method", ["dsgd", "dsignsgd"])
def test_noise_compensation(method):
    lr = 0.02 if method == "dsgd" else 0.01
    base = _arm("baseline", method, lr, 2, 2)
    batch = noise_compensation(2, 2.0)
    follow = _arm("rule-following", method, lr, batch, 2, noise="gaussian:scale=2")
    broken = _arm("rule-breaking", method, lr, 2, 2, noise="gaussian:scale=2")
    _assert_check(check_rule(base, follow, broken, RUNNER, seed=7))
