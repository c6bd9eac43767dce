"""Figure 2 and the shared training code: arms from the rules, the verdict, the real code path
at a reduced size, the agents' gradients, and the torchrun backend's plumbing."""

from __future__ import annotations

import json
import math

import pytest
import torch

from compsde.experiments import deep, fig2
from compsde.experiments.cache import RunCache
from compsde.experiments.deep import FlatModel, TrainSpec, train
from compsde.experiments.deep_figure import Arm, Panel, judge, prediction_tolerance
from compsde.experiments.deep_torchrun import command, windowed
from compsde.nn import make_model

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
    # σ√d is the preset's per-sample noise norm.
    assert by_label["no rule"].noise * math.sqrt(info["dimension"]) == pytest.approx(210.0)


def _panel(levels: dict[str, float], roles: dict[str, str]) -> Panel:
    spec = TrainSpec(model="mlp", data="digits", method="dsgd", lr=0.1, batch=1, agents=1,
                     steps=1)
    arms = [Arm(label, roles[label], spec.with_(seed=i)) for i, label in enumerate(levels)]
    panel = Panel("p", "t", arms)
    panel.results = [{"loss": [9.0, v, v], "steps": [0, 1, 2], "diverged": math.isinf(v)}
                     for v in levels.values()]
    return panel


def test_prediction_interval_tolerance():
    refs = [1.0, 1.1, 0.9, 1.05, 0.95]
    s = torch.tensor(refs, dtype=torch.float64).std().item()
    # t_{0.995, 4} = 4.6041 (tables); √(1 + 1/5)
    assert prediction_tolerance(refs) == pytest.approx(4.6041 * s * math.sqrt(1.2), rel=1e-4)
    with pytest.raises(ValueError, match="levels"):
        prediction_tolerance([1.0])


def test_judge_green_inside_red_outside():
    refs = {f"r{i}": v for i, v in enumerate([1.0, 1.02, 0.98, 1.01, 0.99])}
    roles = {k: "reference" for k in refs} | {"g": "follows", "r": "breaks", "x": "breaks"}
    ok = judge(_panel(refs | {"g": 1.03, "r": 1.5, "x": math.inf}, roles))
    assert ok["verdict"] == "pass", ok["detail"]
    assert ok["tolerance"] == pytest.approx(prediction_tolerance(list(refs.values())))
    bad = judge(_panel(refs | {"g": 1.5, "r": 1.01, "x": math.inf}, roles))
    assert bad["verdict"] == "fail" and "not as claimed: g, r" in bad["detail"]
    diverged_ref = judge(_panel(refs | {"r0": math.inf, "g": 1.0, "r": 2.0, "x": 2.0}, roles))
    assert diverged_ref["verdict"] == "fail"


@deep.intra_op_threads(1)
def test_agent_gradients_vmap_equals_loop():
    model = make_model("resnet:depth=8,width=4,norm=group", (1, 8, 8), 10, seed=3)
    flat = FlatModel(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((3, 5, 1, 8, 8), generator=gen)
    y = torch.randint(10, (3, 5), generator=gen)
    g = flat.agent_grads(flat.theta0, x, y)
    assert g.shape == (3, flat.dim)
    torch.testing.assert_close(g, flat.agent_grads_loop(flat.theta0, x, y), rtol=1e-4,
                               atol=1e-6)
    # In chunks of agents (memory bound) the rows are the same.
    torch.testing.assert_close(flat.agent_grads(flat.theta0, x, y, max_samples=10), g)
    # Agent i's row is the gradient of its own batch only.
    single = torch.func.grad(flat.loss)(flat.theta0, x[1], y[1])
    torch.testing.assert_close(g[1], single, rtol=1e-4, atol=1e-6)


def test_batchnorm_models_are_refused():
    with pytest.raises(ValueError, match="BatchNorm"):
        FlatModel(make_model("resnet:depth=8,width=4", (1, 8, 8), 10))


@pytest.mark.parametrize("field, value", [("lr", 0.0), ("batch", 0), ("agents", 0),
                                          ("noise", -1.0), ("steps", 0),
                                          ("method", "adam")])
def test_train_spec_validation_names_the_parameter(field, value):
    good = dict(model="mlp", data="digits", method="dsgd", lr=0.1, batch=2, agents=2,
                steps=3)
    with pytest.raises(ValueError, match=field):
        TrainSpec(**(good | {field: value}))


def test_train_is_deterministic_per_seed_and_records_the_curve():
    spec = TrainSpec(model="mlp:hidden=16", data="synthetic:n=256,shape=1x8x8",
                     method="dcsgd:randk:ratio=0.5", lr=0.1, batch=4, agents=3, steps=7,
                     noise=0.5, eval_every=3, eval_size=100)
    a, b = train(spec), train(spec)
    assert a["steps"] == [0, 3, 6, 7] and len(a["loss"]) == 4
    assert a["loss"] == b["loss"] and not a["diverged"]
    assert a["omega"] == pytest.approx(1.0, abs=0.01)
    assert train(spec.with_(seed=1))["loss"] != a["loss"]
    assert spec.config() == TrainSpec.from_config(spec.config()).config()
    blown = train(spec.with_(lr=1e4, noise=1e3, method="dsgd"))
    assert blown["diverged"] and blown["final_loss"] is None


def test_reduced_fig2_end_to_end_and_cached(tmp_path):
    outcome = fig2.reproduce(TINY, tmp_path, device="cpu")
    assert set(outcome.panels) == {"vit", "resnet"}
    for panel in outcome.panels.values():
        assert panel["verdict"] in ("pass", "fail")
        assert panel["tolerance"] > 0 and len(panel["runs"]) == TINY.ref_seeds + 4
    assert outcome.png.stat().st_size > 20_000
    runs = 2 * (TINY.ref_seeds + 4)
    assert outcome.data["runs_computed"] == runs and outcome.data["runs_cached"] == 0
    json.dumps(outcome.to_dict())  # serialisable
    again = fig2.reproduce(TINY, tmp_path, device="cpu")
    assert again.data["runs_computed"] == 0 and again.data["runs_cached"] == runs
    assert again.panels == outcome.panels
    assert len(list((tmp_path / "cache" / "fig2").glob("*.json"))) == runs


def test_cache_key_changes_with_the_training_code_version(monkeypatch):
    spec = TINY_MODELS[0]
    a = TrainSpec(model=spec[1], data="digits", method="dsgd", lr=0.1, batch=1, agents=1,
                  steps=1)
    key = RunCache("unused").key(a.config())
    monkeypatch.setattr(deep, "TRAIN_VERSION", "other")
    assert RunCache("unused").key(a.config()) != key


def test_torchrun_command_and_windows():
    spec = TrainSpec(model="mlp", data="digits", method="dcsgd:randk:ratio=0.25", lr=0.05,
                     batch=16, agents=3, steps=10, noise=2.0, eval_every=4)
    cmd = command(spec, "/tmp/x")
    assert "--nproc-per-node=3" in cmd and cmd[cmd.index("--randomness") + 1] == "independent"
    assert cmd[cmd.index("--noise") + 1] == "gaussian:scale=0.5"  # σ/√B
    steps, values = windowed([4.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5], 10, 4)
    assert steps == [0, 4, 8, 10]
    assert values == [4.0, 2.5, 1.0, 0.5]


@deep.intra_op_threads(1)
def test_sharpness_matches_the_top_hessian_eigenvalue():
    model = make_model("mlp:hidden=6", (1, 4, 4), 3, seed=0)
    flat = FlatModel(model)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn((32, 1, 4, 4), generator=gen), torch.randint(3, (32,), generator=gen)
    theta = flat.theta0.double()
    model.double()
    hessian = torch.autograd.functional.hessian(lambda t: flat.loss(t, x.double(), y), theta)
    model.float()
    top = torch.linalg.eigvalsh(hessian).abs().max().item()
    estimate = deep.sharpness(flat, flat.theta0, x, y, 100, torch.Generator().manual_seed(2))
    assert estimate == pytest.approx(top, rel=0.02)
    assert next(model.parameters()).dtype == torch.float32  # restored


def test_torchrun_backend_runs_a_tiny_job():
    """The --distributed path end to end: 2 gloo ranks of the compsde trainer (~20 s)."""
    from compsde.experiments.deep_torchrun import run_torchrun

    spec = TrainSpec(model="mlp:hidden=16", data="synthetic:n=256,shape=1x8x8",
                     method="dcsgd:randk:ratio=0.5", lr=0.1, batch=4, agents=2, steps=6,
                     noise=0.5, eval_every=3)
    result = run_torchrun(spec, timeout=300)
    assert result["steps"] == [0, 3, 6] and len(result["loss"]) == 3
    assert result["world"] == 2 and result["backend"] == "torchrun"
    assert not result["diverged"] and math.isfinite(result["final_loss"])


@pytest.mark.slow
def test_quick_fig2_reproduces_the_claim(tmp_path):
    """`compsde reproduce fig2 --quick` (budget: 10 minutes on 2 idle cores)."""
    from compsde.cli import main

    assert main(["reproduce", "fig2", "--quick", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    result = json.loads((tmp_path / "fig2.json").read_text())
    assert result["verdict"] == "pass" and result["runs_computed"] == 18


@pytest.mark.slow
def test_full_fig2_preset_runs_end_to_end_on_cpu_at_two_steps(tmp_path):
    """The paper-scale networks (ResNet-18-like, ViT-S-like) on the CPU, 2 steps per run."""
    preset = fig2.FULL.scaled(steps=2, eval_every=2, ref_seeds=2, eval_size=128,
                              train_size=2048)
    outcome = fig2.reproduce(preset, tmp_path, device="cpu")
    assert outcome.data["numbers"]["resnet"]["dimension"] > 10_000_000
    assert outcome.data["numbers"]["vit"]["dimension"] > 20_000_000
    assert all(math.isfinite(p["tolerance"]) for p in outcome.panels.values())
