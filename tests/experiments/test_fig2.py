"""Figure 2: the DCSGD arms from the rules, the real code path at a reduced size, and the
quick and full presets (slow)."""

from __future__ import annotations

import json
import math

import pytest

from compsde.experiments import fig2

TINY_MODELS = (("vit", "vit:dim=8,depth=1,heads=2,patch=7", 0),
               ("resnet", "resnet:depth=8,width=4,norm=group", 8))
TINY = fig2.QUICK.scaled(models=TINY_MODELS, steps=6, eval_every=3, ref_seeds=2,
                         train_size=256, eval_size=64)


def test_arms_follow_the_first_order_rules():
    panel, info = fig2.panel_for("vit", "vit:dim=32,depth=2,heads=2,patch=7", 0, fig2.QUICK,
                                 seed=0, shape=(1, 28, 28), classes=10)
    assert info["omega"] == pytest.approx(3.0, abs=1e-3)
    roles = [a.role for a in panel.arms]
    assert roles == ["reference"] * 5 + ["follows", "follows", "breaks", "breaks"]
    by_label = {a.label: a.spec for a in panel.arms}
    q = fig2.QUICK
    assert (by_label["batch rule"].batch, by_label["batch rule"].agents) == (4 * q.batch,
                                                                            q.agents)
    assert (by_label["agents rule"].batch, by_label["agents rule"].agents) == (q.batch,
                                                                              4 * q.agents)
    assert by_label["no rule"].method == "dcsgd:randk:ratio=0.25"
    assert by_label["wrong ω"].method == "dcsgd:randk:ratio=0.03125"
    assert all(a.spec.lr == q.lr for a in panel.arms)
    assert len({a.spec.seed for a in panel.arms}) == len(panel.arms)  # independent draws
    # σ√d is the preset's per-sample noise norm, unless the model entry sets its own.
    assert by_label["no rule"].noise * math.sqrt(info["dimension"]) == pytest.approx(210.0)
    name, model, size, norm = q.models[0]
    panel, info = fig2.panel_for(name, model, size, q, 0, (1, 28, 28), 10, norm)
    assert norm == 300.0 and all(a.spec.noise * math.sqrt(info["dimension"]) == pytest.approx(300.0)
                                 for a in panel.arms)


@pytest.mark.needs_data("fashion-mnist")
def test_reduced_fig2_end_to_end_and_cached(tmp_path):
    outcome = fig2.reproduce(TINY, tmp_path, device="cpu")
    assert set(outcome.panels) == {"vit", "resnet"}
    for panel in outcome.panels.values():
        assert panel["verdict"] in ("pass", "fail")
        assert panel["interval"] > 0 and len(panel["runs"]) == TINY.ref_seeds + 4
    assert outcome.png.stat().st_size > 20_000
    runs = 2 * (TINY.ref_seeds + 4)
    assert outcome.data["runs_computed"] == runs and outcome.data["runs_cached"] == 0
    json.dumps(outcome.to_dict())  # serialisable
    again = fig2.reproduce(TINY, tmp_path, device="cpu")
    assert again.data["runs_computed"] == 0 and again.data["runs_cached"] == runs
    assert again.panels == outcome.panels
    assert len(list((tmp_path / "cache" / "fig2").glob("*.json"))) == runs
    # Two worker processes compute the same runs: the figure does not depend on jobs.
    parallel = fig2.reproduce(TINY, tmp_path / "jobs2", device="cpu", jobs=2)
    assert parallel.data["runs_computed"] == runs and parallel.panels == outcome.panels


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.needs_data("fashion-mnist")
def test_quick_fig2_reproduces_the_claim(tmp_path):
    """`compsde reproduce fig2 --quick` (budget: 10 minutes on 2 idle cores)."""
    from compsde.cli import main

    assert main(["reproduce", "fig2", "--quick", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    result = json.loads((tmp_path / "fig2.json").read_text())
    assert result["verdict"] == "pass" and result["runs_computed"] == 18


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.needs_data("fashion-mnist")
def test_full_fig2_preset_runs_end_to_end_on_cpu_at_two_steps(tmp_path):
    """The paper-scale networks (ResNet-18-like, ViT-S-like) on the CPU, 2 steps per run."""
    preset = fig2.FULL.scaled(steps=2, eval_every=2, ref_seeds=2, eval_size=128,
                              train_size=2048)
    outcome = fig2.reproduce(preset, tmp_path, device="cpu")
    assert outcome.data["numbers"]["resnet"]["dimension"] > 10_000_000
    assert outcome.data["numbers"]["vit"]["dimension"] > 20_000_000
    assert all(math.isfinite(p["interval"]) for p in outcome.panels.values())
