"""The EF-signSGD table's verdict (THEORY.md §8c) on a reduced run, with a wrong method patched in.

The reduced run is the quick preset's setting (Fashion-MNIST, the MLP, one agent, one epoch,
three judged seeds, the recorded learning rates) with only the three judged methods and the
batches 128 and 8 (the two ends of the table, where the checks are made); it is judged by the
figure's own verdict
function (:func:`ef.judge`). The real code passes it; EF-signSGD without its error update
(scaled sign at EF's learning rate) and a scaled sign that forgets its scale ‖g‖₁/d (signSGD
at scaled sign's learning rate) fail it. The mutants are patched into this process and every
run of the patched method is trained here (one job: spawned workers would not see the patch;
the run cache is keyed by the source, not the patch, so it is not used); the other methods'
runs are shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch

from compsde.experiments import ef
from compsde.experiments.deep import train
from compsde.methods import EFSignSGD, ScaledSignSGD

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600),
              pytest.mark.needs_data("fashion-mnist")]

REDUCED = ef.QUICK.scaled(methods=tuple((m, ef.LEARNING_RATES[m])
                                        for m in (ef.SGD, ef.SCALED, ef.EF)),
                          batches=(128, 8))


def verdict(results: Mapping[Any, dict[str, Any]]) -> dict[str, Any]:
    specs = list(results)
    acc, _ = ef.tables(specs, [results[s] for s in specs])
    panels = ef.judge(acc, REDUCED.batches)
    return {"verdict": "pass" if all(p["verdict"] == "pass" for p in panels.values())
            else "fail", "panels": panels}


@pytest.fixture(scope="module")
def real() -> dict[Any, dict[str, Any]]:
    return {s: train(s, device="cpu") for s in ef.specs_for(REDUCED)}


def retrain(real: dict[Any, dict[str, Any]], method: str) -> dict[Any, dict[str, Any]]:
    return {s: (train(s, device="cpu") if s.method == method else r) for s, r in real.items()}


def test_real_code_passes_the_reduced_table(real):
    result = verdict(real)
    failing = {k: p["detail"] for k, p in result["panels"].items() if p["verdict"] != "pass"}
    assert not failing, failing


def test_ef_signsgd_without_its_error_update_fails(monkeypatch, caught, real):
    def step(self: EFSignSGD, grads: torch.Tensor, state: torch.Tensor | None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        return self.compressor(grads, generator).mean(dim=-2)   # e stays 0: scaled sign

    monkeypatch.setattr(EFSignSGD, "step", step)
    caught(verdict(retrain(real, ef.EF))["verdict"])


def test_scaled_sign_without_its_scale_fails(monkeypatch, caught, real):
    def direction(self: ScaledSignSGD, grads: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        positive = (grads >= 0).sum(dim=-2, dtype=grads.dtype)   # mean of signs, no ‖g‖₁/d
        return positive.mul_(2.0 / grads.shape[-2]).sub_(1.0)

    monkeypatch.setattr(ScaledSignSGD, "direction", direction)
    caught(verdict(retrain(real, ef.SCALED))["verdict"])
