"""Figure lm's verdict fails when the tail estimator is wrong (it then predicts the wrong thing).

A tail estimator that always reports Gaussian noise (ν̂ = ∞) makes the module predict the
finite-variance (1+ω) behaviour; on the language model's real gradients DCSGD's spikes then
contradict that prediction and the verdict fails, while the unpatched run passes.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from compsde.diagnose import groups, measure
from compsde.experiments import lm

pytestmark = pytest.mark.needs_data("text")
TINY = lm.SMOKE


@pytest.fixture(scope="module")
def unpatched(tmp_path_factory):
    return lm.reproduce(TINY, tmp_path_factory.mktemp("lm"), seed=0)


def test_unpatched_run_passes(unpatched):
    assert unpatched.data["prediction"]["heavy"]
    assert unpatched.verdict == "pass", unpatched.panels


def test_gaussian_tail_estimator_fails(unpatched, monkeypatch, tmp_path):
    real_fit = measure.fit_student_t

    def gaussian_fit(samples, **kwargs):
        fit = real_fit(samples, **kwargs)
        return dataclasses.replace(fit, nu=math.inf, nu_se=None, xi_se=None,
                                   nu_interval=(0.0, math.inf))

    monkeypatch.setattr(measure, "fit_student_t", gaussian_fit)
    monkeypatch.setattr(groups, "fit_student_t", gaussian_fit)
    outcome = lm.reproduce(TINY, tmp_path, seed=0)
    assert not outcome.data["prediction"]["heavy"]
    assert outcome.panels["real"]["verdict"] == "fail"
    assert outcome.verdict == "fail"
