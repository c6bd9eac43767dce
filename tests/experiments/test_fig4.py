"""Figure 4: DSignSGD's (T) and (K) rules as arms, shared references, the reduced real path."""

from __future__ import annotations

import pytest

from compsde.experiments import fig4

TINY = fig4.QUICK.scaled(models=(("vit", "vit:dim=8,depth=1,heads=2,patch=7", 0),
                                 ("resnet", "resnet:depth=8,width=4,norm=group", 8)),
                         steps=8, eval_every=4, ref_seeds=2, train_size=256, eval_size=64)


def test_arms_follow_the_sign_rules():
    q = fig4.QUICK
    panels, info = fig4.panels_for("vit", "vit:dim=32,depth=2,heads=2,patch=7", 0, q, seed=0,
                                   shape=(1, 28, 28), classes=10)
    t_panel, k_panel = panels
    k = q.kappa
    t = {a.label: a for a in t_panel.arms}
    kk = {a.label: a for a in k_panel.arms}
    rule_t, red_t = t["(T) rule"].spec, t["agents kept"].spec
    assert (rule_t.lr, rule_t.batch, rule_t.agents) == pytest.approx((k * q.lr, q.batch,
                                                                      k * q.agents))
    assert rule_t.steps == q.steps // k and t["(T) rule"].time_unit == k
    assert (red_t.lr, red_t.batch, red_t.agents, red_t.steps) == pytest.approx(
        (k * k * q.lr, q.batch, q.agents, q.steps // k**2))
    assert t["agents kept"].time_unit == k * k
    rule_k, red_k = kk["(K) rule"].spec, kk["agents kept"].spec
    assert (rule_k.lr, rule_k.batch, rule_k.agents, rule_k.steps) == pytest.approx(
        (k * q.lr, q.batch // k**2, k**2 * q.agents, q.steps))
    assert (red_k.lr, red_k.batch, red_k.agents) == (k * q.lr, q.batch // k**2, q.agents)
    assert all(a.spec.method == "dsignsgd" for a in t_panel.arms + k_panel.arms)
    # Both panels share the same reference runs.
    refs = [a.spec for a in t_panel.arms if a.role == "reference"]
    assert refs == [a.spec for a in k_panel.arms if a.role == "reference"]
    assert info["kappa"] == k


def test_preset_checks_kappa_divides():
    with pytest.raises(ValueError, match="kappa"):
        fig4.QUICK.scaled(kappa=3)


@pytest.mark.needs_data("fashion-mnist")
def test_reduced_fig4_end_to_end(tmp_path):
    outcome = fig4.reproduce(TINY, tmp_path, device="cpu")
    assert list(outcome.panels) == ["vit (T)", "vit (K)", "resnet (T)", "resnet (K)"]
    for panel in outcome.panels.values():
        assert panel["verdict"] in ("pass", "fail") and len(panel["runs"]) == 4
    # 2 reference seeds shared by the (T) and (K) panels + 4 arms, per network.
    assert outcome.data["runs_computed"] == 2 * (2 + 4)
    assert outcome.png.stat().st_size > 20_000


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.needs_data("fashion-mnist")
def test_quick_fig4_reproduces_the_claim(tmp_path):
    """`compsde reproduce fig4 --quick` (budget: 10 minutes on 2 idle cores)."""
    import json

    from compsde.cli import main

    assert main(["reproduce", "fig4", "--quick", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "fig4.json").read_text())["verdict"] == "pass"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.needs_data("fashion-mnist")
def test_full_fig4_preset_runs_end_to_end_on_cpu_at_four_steps(tmp_path):
    """The paper-scale networks on the CPU, 4 steps per run (κ = 2: the (T) runs take 2 and 1)."""
    preset = fig4.FULL.scaled(steps=4, eval_every=4, ref_seeds=2, eval_size=128,
                              train_size=2048)
    outcome = fig4.reproduce(preset, tmp_path, device="cpu")
    assert len(outcome.panels) == 4
    assert outcome.data["runs_computed"] == 2 * (2 + 4)
