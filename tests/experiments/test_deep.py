"""The shared training code of figures 2 and 4: run specs, one training run and its cache key
(the flat-parameter model and the sharpness estimate: tests/nn/test_flat.py)."""

from __future__ import annotations

import pytest

from compsde.experiments import deep
from compsde.experiments.cache import RunCache
from compsde.experiments.deep import TrainSpec, train

TINY_VIT = "vit:dim=8,depth=1,heads=2,patch=7"


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
