"""The EF-signSGD table (THEORY.md §8c): the verdict on synthetic tables, the arms, a tiny run
end to end, and the stateful methods' path through the deep runs."""

from __future__ import annotations

import json

import pytest
import torch

from compsde.experiments import ef
from compsde.experiments.deep import TrainSpec, train
from compsde.experiments.registry import load_all

DATA = "synthetic:n=512,shape=1x8x8,classes=4"
TINY = ef.QUICK.scaled(model="mlp:hidden=16", data=DATA,
                       methods=(("dsgd", 0.1), ("scaledsign", 0.1), ("ef-signsgd", 0.1),
                                ("dsignsgd", 0.01)),
                       batches=(16, 4), epochs=0.25, seeds=2, eval_size=64, test_size=64,
                       records=4)
BATCHES = (128, 32, 8)


def table(scaled: tuple[float, ...], ef_gap: tuple[float, ...], noise: float = 0.3) -> dict:
    """Accuracies per seed: SGD at 85, scaled sign and EF-signSGD at SGD + the given gaps
    (one per batch), each seed shifted by a multiple of ±noise (scaled sign's multiple grows
    with the batch index, so the paired widening has an se too)."""
    jitter = (-noise, 0.0, noise)
    sgd = {b: [85.0 + j for j in jitter] for b in BATCHES}
    return {"dsgd": sgd,
            "scaledsign": {b: [85.0 + g + (k + 2) * j for j in jitter]
                           for k, (b, g) in enumerate(zip(BATCHES, scaled, strict=True))},
            "ef-signsgd": {b: [85.0 + g - j for j in jitter]
                           for b, g in zip(BATCHES, ef_gap, strict=True)}}


def test_the_published_pattern_passes_every_check():
    panels = ef.judge(table(scaled=(-2.2, -10.0, -36.4), ef_gap=(-0.3, 0.2, -0.9)), BATCHES)
    assert {name: p["verdict"] for name, p in panels.items()} == {
        "scaled sign widens": "pass", "EF-signSGD within band": "pass",
        "EF beats scaled sign": "pass"}
    for p in panels.values():
        for key in ("verdict", "quantity", "measured", "predicted", "tolerance", "margin",
                    "rule", "checks"):
            assert key in p
    widening = panels["scaled sign widens"]["checks"][0]
    assert widening["measured"] == pytest.approx(36.4 - 2.2)
    assert widening["predicted"] == pytest.approx(ef.K_SE * panels["scaled sign widens"]["se"])
    assert panels["scaled sign widens"]["se"] > 0


def test_each_check_fails_on_its_own_wrong_pattern():
    flat = ef.judge(table(scaled=(-2.0, -2.1, -2.3), ef_gap=(0.0, 0.0, 0.0)), BATCHES)
    assert flat["scaled sign widens"]["verdict"] == "fail"        # no widening beyond 2 se
    drift = ef.judge(table(scaled=(-2.0, -10.0, -30.0), ef_gap=(0.0, -1.0, -4.0)), BATCHES)
    assert drift["EF-signSGD within band"]["verdict"] == "fail"   # EF falls out of the band
    assert drift["scaled sign widens"]["verdict"] == "pass"
    same = ef.judge(table(scaled=(-0.5, -1.0, -3.0), ef_gap=(-0.5, -1.0, -3.0)), BATCHES)
    assert same["EF beats scaled sign"]["verdict"] == "fail"      # EF = scaled sign


def test_the_band_is_fixed_and_the_se_is_paired_by_seed():
    # A common shift of all methods per seed cancels in the paired gaps: se = 0.
    shift = (-3.0, 0.0, 3.0)
    t = {m: {b: [80.0 + g + s for s in shift] for b in BATCHES}
         for m, g in (("dsgd", 0.0), ("scaledsign", -5.0), ("ef-signsgd", -0.99))}
    panels = ef.judge(t, BATCHES)
    band = panels["EF-signSGD within band"]["checks"]
    assert all(c["se"] == pytest.approx(0.0, abs=1e-12) for c in band)
    assert all(c["tolerance"] == pytest.approx(ef.EF_BAND) for c in band)
    assert panels["EF-signSGD within band"]["verdict"] == "pass"
    t["ef-signsgd"][8] = [v - 0.02 for v in t["ef-signsgd"][8]]     # 1.01 points: outside
    assert ef.judge(t, BATCHES)["EF-signSGD within band"]["verdict"] == "fail"


def test_bad_presets_and_tables_are_refused():
    with pytest.raises(ValueError, match="methods must include"):
        ef.QUICK.scaled(methods=(("dsgd", 0.1), ("scaledsign", 0.1)))
    with pytest.raises(ValueError, match="decreasing"):
        ef.QUICK.scaled(batches=(8, 32, 128))
    with pytest.raises(ValueError, match="seeds"):
        ef.QUICK.scaled(seeds=1)
    with pytest.raises(ValueError, match="table must hold"):
        ef.judge({"dsgd": {8: [1.0, 2.0]}}, (8,))


def test_arms_use_equal_epochs_and_pair_seeds_out_of_sample():
    specs = ef.specs_for(ef.QUICK.scaled(train_size=12800))
    assert len(specs) == 5 * 3 * 3
    steps = {s.batch: s.steps for s in specs}
    assert steps == {128: 100, 32: 400, 8: 1600}
    assert {s.seed for s in specs} == {1000 * ef.SEED_OFFSET + i for i in range(3)}
    assert min(ef.PRESET_SEEDS) + ef.SEED_OFFSET > max(ef.PRESET_SEEDS)
    assert {s.agents for s in specs} == {1}
    assert {s.method: s.lr for s in specs} == ef.LEARNING_RATES


def test_the_figure_is_registered():
    figure = load_all()["ef"]
    assert figure.claim == ef.CLAIM and "fashion-mnist" in figure.data


def test_stateful_methods_train_and_stateless_ones_keep_their_config():
    base = TrainSpec(model="mlp:hidden=8", data=DATA, method="dsgd", lr=0.1, batch=4, agents=2,
                     steps=6, eval_size=32, eval_every=3)
    assert "test_size" not in base.config()             # fig2/fig4's cache keys unchanged
    runs = {m: train(base.with_(method=m, test_size=32))
            for m in ("ef-signsgd", "signum:beta=0.9", "ef21:topk:ratio=0.5", "scaledsign")}
    for result in runs.values():
        assert not result["diverged"] and len(result["test_accuracy"]) == 3
        assert all(0.0 <= a <= 1.0 for a in result["test_accuracy"])
    # The first EF-signSGD step has e = 0: it is scaled sign's; later ones differ.
    assert runs["ef-signsgd"]["loss"][0] == runs["scaledsign"]["loss"][0]
    assert runs["ef-signsgd"]["loss"][-1] != runs["scaledsign"]["loss"][-1]
    again = train(base.with_(method="ef-signsgd", test_size=32))
    assert again["loss"] == runs["ef-signsgd"]["loss"]  # explicit generators: reproducible
    assert torch.get_num_threads() >= 1


def test_tiny_preset_end_to_end(tmp_path):
    outcome = ef.reproduce(TINY, tmp_path, device="cpu")
    assert set(outcome.panels) == {"scaled sign widens", "EF-signSGD within band",
                                   "EF beats scaled sign"}
    for panel in outcome.panels.values():
        assert panel["verdict"] in ("pass", "fail")
    data = outcome.data
    assert data["runs_computed"] == 4 * 2 * 2 and data["runs_cached"] == 0
    for key in ("prediction", "quantity", "k_se", "ef_band_points", "learning_rates", "steps",
                "accuracy", "gaps", "loss_gaps", "preset_chosen_on_seeds",
                "training_seeds_from"):
        assert key in data
    assert set(data["gaps"]) == {"scaledsign", "ef-signsgd", "dsignsgd"}
    assert set(data["gaps"]["ef-signsgd"]) == {"16", "4"}
    assert data["steps"] == {"16": 8, "4": 32}          # equal epochs: 4× the steps at B/4
    json.dumps(outcome.to_dict())
    assert outcome.png.stat().st_size > 20_000
    again = ef.reproduce(TINY, tmp_path, device="cpu")
    assert again.data["runs_cached"] == 16 and again.panels == outcome.panels
