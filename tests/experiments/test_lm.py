"""Figure lm: excursions, the spike verdict, the prediction from ν̂, an end-to-end tiny run."""

from __future__ import annotations

import math

import pytest

from compsde.experiments import lm
from compsde.experiments.registry import FIGURE_MODULES, load_all

needs_text = pytest.mark.needs_data("text")
TINY = lm.SMOKE


def _run(losses, diverged=False):
    return {"loss": losses, "diverged": diverged}


def test_largest_excursion_is_the_rise_above_the_running_best():
    assert lm.largest_excursion(_run([5, 4, 3, 2, 1, 0.5])) == 0.0
    # last half = records 3..5; best so far there is 2, 2, 1 → rises 0.5, 0, 0.2
    assert lm.largest_excursion(_run([5, 4, 2, 2.5, 1, 1.2])) == pytest.approx(0.5)
    # a spike in the first half does not count once the loss is below it again
    assert lm.largest_excursion(_run([5, 9, 3, 2, 1, 0.5])) == 0.0
    assert lm.largest_excursion(_run([5, 4, None, None], diverged=True)) == math.inf


def test_spike_verdict_tolerance_is_k_se_plus_budget():
    spiky = [_run([5, 3, 2, 2.0 + e, 1.5, 1.5 + e]) for e in (0.5, 0.7, 0.9)]
    smooth = [_run([5, 3, 2, 1.9, 1.8, 1.7])] * 3
    j = lm.judge_spikes(spiky, smooth)
    se = math.sqrt(0.04 / 3)
    assert j["measured"] == pytest.approx(0.7) and j["se"] == pytest.approx(se)
    assert j["predicted"] == pytest.approx(2 * se + lm.SPIKE_BUDGET) and j["verdict"] == "pass"
    for key in ("verdict", "quantity", "measured", "predicted", "tolerance", "rule"):
        assert key in j
    assert lm.judge_spikes(smooth, smooth)["verdict"] == "fail"
    assert lm.judge_spikes(smooth, spiky)["verdict"] == "fail"
    diverged = [_run([5, 4, None], diverged=True), *spiky[1:]]
    assert lm.judge_spikes(diverged, smooth)["verdict"] == "pass"
    assert lm.judge_spikes(smooth, diverged)["verdict"] == "fail"


def test_prediction_follows_the_upper_end_of_the_interval():
    heavy = lm.predict({"xi": 1 / 1.2, "xi_se": 0.01})
    assert heavy["heavy"] and "spikes" in heavy["text"]
    assert not lm.predict({"xi": 0.1, "xi_se": 0.01})["heavy"]          # ν̂ = 10
    assert not lm.predict({"xi": 0.0, "xi_se": None})["heavy"]          # Gaussian
    # ν̂ = 1.9 but the interval reaches past 2: not confidently heavy
    assert not lm.predict({"xi": 1 / 1.9, "xi_se": 0.05})["heavy"]


def test_registered_as_a_figure():
    assert "lm" in FIGURE_MODULES and "lm" in load_all()


def test_preset_seeds_differ_from_the_seeds_that_chose_it():
    for preset in lm.PRESETS.values():
        arms, _ = lm._arms(preset, 0, 230_144)
        used = {a.spec.seed for group in arms.values() for a in group}
        assert used.isdisjoint(preset.chosen_with)
        noise = lm._noise_specs(preset.scaled(compare=()), 0)
        assert {s.seed for s in noise}.isdisjoint(preset.chosen_with)


def test_dcsgd_runs_at_the_first_order_batch_rule():
    arms, info = lm._arms(lm.QUICK, 0, 230_144)
    assert info["omega"] == pytest.approx(3.0, rel=1e-4) and info["batch_rule"] == 64
    assert all(a.spec.batch == 64 and a.spec.method.startswith("dcsgd:randk")
               for a in arms["rule"])
    assert all(a.spec.noise == 0 for group in arms.values() for a in group)   # no injection


@needs_text
def test_tiny_run_writes_png_and_json_with_verdicts(tmp_path):
    outcome = lm.reproduce(TINY, tmp_path, seed=0)
    assert outcome.png.is_file() and outcome.png.stat().st_size > 10_000
    assert set(outcome.panels) >= {"real"}
    for panel in outcome.panels.values():
        for key in ("verdict", "quantity", "measured", "predicted", "tolerance", "rule"):
            assert key in panel
    noise = outcome.data["noise"][0]
    assert set(noise["groups"]) == {"embeddings", "attention", "mlp", "norms"}
    assert outcome.data["prediction"]["text"]
    assert outcome.data["runs_computed"] > 0
    again = lm.reproduce(TINY, tmp_path, seed=0)                      # resumes from the cache
    assert again.data["runs_computed"] == 0 and again.verdict == outcome.verdict
    for name, panel in outcome.panels.items():
        assert again.panels[name]["measured"] == pytest.approx(panel["measured"])


@pytest.mark.slow
@pytest.mark.needs_data("text", "fashion-mnist")
def test_quick_preset_passes(tmp_path):
    outcome = lm.reproduce(lm.QUICK, tmp_path, seed=0, jobs=2)
    assert outcome.verdict == "pass", outcome.panels
    labels = [m["label"] for m in outcome.data["noise"]]
    assert len(labels) == 3


def test_student_t_injection_is_part_of_the_config_only_when_set():
    from compsde.experiments.deep import TrainSpec
    from compsde.experiments.deep_torchrun import command

    spec = TrainSpec(model="mlp", data="synthetic", method="dsgd", lr=0.1, batch=16, agents=2,
                     steps=5, noise=2.0)
    assert "noise_nu" not in spec.config()                     # Gaussian keys unchanged
    heavy = spec.with_(noise_nu=1.5)
    assert heavy.config()["noise_nu"] == 1.5
    assert TrainSpec.from_config(heavy.config()) == heavy
    cmd = command(heavy, "/tmp/x")
    assert cmd[cmd.index("--noise") + 1] == "student-t:nu=1.5,scale=0.5"      # σ/√B
    with pytest.raises(ValueError, match="noise_nu"):
        spec.with_(noise_nu=-1.0)
