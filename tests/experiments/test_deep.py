"""The shared training code of figures 2 and 4: agents' gradients, run specs, one training
run, its cache key and the sharpness estimate."""

from __future__ import annotations

import pytest
import torch

from compsde.experiments import deep
from compsde.experiments.cache import RunCache
from compsde.experiments.deep import FlatModel, TrainSpec, train
from compsde.nn import make_model

TINY_VIT = "vit:dim=8,depth=1,heads=2,patch=7"


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


def test_cache_key_changes_with_the_training_code_version(monkeypatch):
    a = TrainSpec(model=TINY_VIT, data="digits", method="dsgd", lr=0.1, batch=1, agents=1,
                  steps=1)
    key = RunCache("unused").key(a.config())
    monkeypatch.setattr(deep, "TRAIN_VERSION", "other")
    assert RunCache("unused").key(a.config()) != key


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
