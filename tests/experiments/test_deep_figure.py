"""The verdict of figures 2 and 4: the prediction-interval tolerance and the judgement."""

from __future__ import annotations

import math

import pytest
import torch

from compsde.experiments.deep import TrainSpec
from compsde.experiments.deep_figure import Arm, Panel, judge, prediction_tolerance


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
    assert ok["interval"] == pytest.approx(prediction_tolerance(list(refs.values())))
    bad = judge(_panel(refs | {"g": 1.5, "r": 1.01, "x": math.inf}, roles))
    assert bad["verdict"] == "fail" and "not as claimed: g, r" in bad["detail"]
    diverged_ref = judge(_panel(refs | {"r0": math.inf, "g": 1.0, "r": 2.0, "x": 2.0}, roles))
    assert diverged_ref["verdict"] == "fail"
