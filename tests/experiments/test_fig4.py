"""Figure 4: DSignSGD's (T) and (K) rules as arms, shared references, the reduced real path."""

from __future__ import annotations

import pytest

from compsde.experiments import fig4

TINY = fig4.QUICK.scaled(models=(("vit", "vit:dim=8,depth=1,heads=2,patch=7", 0),
                                 ("resnet", "resnet:depth=8,width=4,norm=group", 8)),
                         steps=24, eval_every=12, ref_seeds=2, train_size=256, eval_size=64)


def test_arms_follow_the_sign_rules():
    q = fig4.QUICK
    panels, info = fig4.panels_for("vit", "vit:dim=32,depth=2,heads=2,patch=7", 0, q, seed=0,
                                   shape=(1, 28, 28), classes=10)
    t_panel, k_panel = panels
    k, kt = q.kappa, q.kappa_time
    t = {a.label: a for a in t_panel.arms}
    kk = {a.label: a for a in k_panel.arms}
    rule_t, red_t = t["(T) rule"].spec, t["agents kept"].spec
    assert (rule_t.lr, rule_t.batch, rule_t.agents) == pytest.approx((kt * q.lr, q.batch,
                                                                      kt * q.agents))
    assert rule_t.steps == pytest.approx(q.steps / kt) and t["(T) rule"].time_unit == kt
    # The red (T) arm is the (T) rule at κ_K² = 4 with its 4N agents left out (4× the
    # diffusion, the break of the red (K) arm).
    assert (red_t.lr, red_t.batch, red_t.agents, red_t.steps) == pytest.approx(
        (k * k * q.lr, q.batch, q.agents, q.steps / k**2))
    assert t["agents kept"].time_unit == k * k
    # Equal SDE time: every (T) arm ends at the reference's t = Kη.
    for arm in (rule_t, red_t):
        assert arm.steps * arm.lr == pytest.approx(q.steps * q.lr)
    rule_k, red_k = kk["(K) rule"].spec, kk["agents kept"].spec
    assert (rule_k.lr, rule_k.batch, rule_k.agents, rule_k.steps) == pytest.approx(
        (k * q.lr, q.batch // k**2, k**2 * q.agents, q.steps))
    assert (red_k.lr, red_k.batch, red_k.agents) == (k * q.lr, q.batch // k**2, q.agents)
    assert all(a.spec.method == "dsignsgd" for a in t_panel.arms + k_panel.arms)
    # Both panels share the same reference runs.
    refs = [a.spec for a in t_panel.arms if a.role == "reference"]
    assert refs == [a.spec for a in k_panel.arms if a.role == "reference"]
    assert info["kappa"] == k and info["kappa_time"] == kt


def test_preset_checks_kappa_divides():
    with pytest.raises(ValueError, match="kappa"):
        fig4.QUICK.scaled(kappa=3)
    with pytest.raises(ValueError, match="kappa_time"):
        fig4.QUICK.scaled(kappa_time=1.3)
    with pytest.raises(ValueError, match="kappa_time"):
        fig4.QUICK.scaled(kappa_time=1.25)      # κ·agents = 5, steps/κ = 576, but 48/κ = 38.4
    with pytest.raises(ValueError, match="kappa_time"):
        fig4.QUICK.scaled(kappa_time=1.0)


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
    """The paper-scale networks on the CPU, 12 steps per run (the (T) runs take 8 and 3)."""
    preset = fig4.FULL.scaled(steps=12, eval_every=12, ref_seeds=2, eval_size=128,
                              train_size=2048)
    outcome = fig4.reproduce(preset, tmp_path, device="cpu")
    assert len(outcome.panels) == 4
    assert outcome.data["runs_computed"] == 2 * (2 + 4)
