"""The --distributed backend of figures 2 and 4: its torchrun command, the loss windows, and a
tiny job end to end."""

from __future__ import annotations

import math

import pytest

from compsde.experiments.deep import TrainSpec
from compsde.experiments.deep_torchrun import command, run_torchrun, windowed


def test_torchrun_command_and_windows():
    spec = TrainSpec(model="mlp", data="digits", method="dcsgd:randk:ratio=0.25", lr=0.05,
                     batch=16, agents=3, steps=10, noise=2.0, eval_every=4)
    cmd = command(spec, "/tmp/x")
    assert "--nproc-per-node=3" in cmd and cmd[cmd.index("--randomness") + 1] == "independent"
    assert cmd[cmd.index("--noise") + 1] == "gaussian:scale=0.5"  # σ/√B
    steps, values = windowed([4.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5], 10, 4)
    assert steps == [0, 4, 8, 10]
    assert values == [4.0, 2.5, 1.0, 0.5]


def test_torchrun_backend_runs_a_tiny_job():
    """The --distributed path end to end: 2 gloo ranks of the compsde trainer (~20 s)."""
    spec = TrainSpec(model="mlp:hidden=16", data="synthetic:n=256,shape=1x8x8",
                     method="dcsgd:randk:ratio=0.5", lr=0.1, batch=4, agents=2, steps=6,
                     noise=0.5, eval_every=3)
    result = run_torchrun(spec, timeout=300)
    assert result["steps"] == [0, 3, 6] and len(result["loss"]) == 3
    assert result["world"] == 2 and result["backend"] == "torchrun"
    assert not result["diverged"] and math.isfinite(result["final_loss"])


@pytest.mark.slow
@pytest.mark.needs_data("fashion-mnist")
def test_fig2_distributed_end_to_end(tmp_path):
    """`reproduce fig2 --distributed` at a tiny size: every arm is a torchrun job (1–4 ranks)."""
    from compsde.experiments import fig2

    preset = fig2.QUICK.scaled(models=(("vit", "vit:dim=8,depth=1,heads=2,patch=7", 0),),
                               agents=1, steps=4, eval_every=2, ref_seeds=2)
    outcome = fig2.reproduce(preset, tmp_path, device="cpu", distributed=True)
    assert outcome.data["backend"] == "torchrun" and outcome.data["runs_computed"] == 6
    panel = outcome.panels["vit"]
    assert panel["verdict"] in ("pass", "fail") and math.isfinite(panel["interval"])
    cached = fig2.reproduce(preset, tmp_path, device="cpu", distributed=True)
    assert cached.data["runs_cached"] == 6 and cached.panels == outcome.panels
    # Simulated runs live under other keys: nothing is reused across backends.
    simulated = fig2.reproduce(preset, tmp_path, device="cpu")
    assert simulated.data["runs_computed"] == 6
