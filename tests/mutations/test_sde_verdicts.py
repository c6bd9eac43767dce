"""Figure 1's panels and `compsde validate` against a wrong SDE (diffusion ×2, drift ×½)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutants

from compsde.cli import main
from compsde.experiments import fig1
from compsde.validate_sweep import lr_sweep

TEST = fig1.CONFIGS["test"]
# DSGD at stationarity on ½‖x‖²: the mean loss is η d σ²/(4N), set by the diffusion alone.
VALIDATE = ["validate", "--method", "dsgd", "--landscape", "quadratic:d=2", "--lr", "0.05",
            "--steps", "300", "--runs", "1000", "--no-progress"]
SWEEP = dict(lrs=[0.2, 0.1, 0.05], horizon=1.0, runs=20_000, substeps=4, agents=2, x0=2.0,
             seed=0)


def panel_a() -> dict:
    return fig1.panel_mean(fig1.ROSENBROCK | TEST["A"], TEST["runs"], 0, False, "A",
                           spread=True)


def panel_b() -> dict:
    return fig1.panel_mean(fig1.SADDLE | TEST["B"], TEST["runs"], 0, False, "B")


def panel_c() -> dict:
    return fig1.panel_phases(fig1.QUADRATIC | TEST["C"], TEST["runs"], 0, False)


def panel_d() -> dict:
    return fig1.panel_mlp(fig1.MLP, TEST["mlp_runs"], TEST["mlp_images"], TEST["mlp_steps"], 0,
                          False)


def sweep() -> dict:
    return lr_sweep("dsignsgd", "quadratic:d=1", "gaussian:scale=1", **SWEEP).judgement


PANELS = {"A": panel_a, "B": panel_b, "C": panel_c, "D": panel_d}


def panels(*names: str) -> list:
    """``names`` as parameters; panel D (the MLP) reads Fashion-MNIST."""
    return [pytest.param(n, marks=pytest.mark.needs_data("fashion-mnist")) if n == "D" else n
            for n in names]


@pytest.mark.parametrize("name", panels(*sorted(PANELS)))
def test_real_code_passes_fig1_panel(name):
    assert PANELS[name]()["verdict"] == "pass"


def test_real_code_passes_validate_and_its_lr_sweep(tmp_path):
    assert main([*VALIDATE, "--out", str(tmp_path)]) == 0
    assert sweep()["verdict"] == "pass"


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_doubled_diffusion_fails_fig1_panel(name, monkeypatch, caught):
    """Panel A's mean is drift-dominated: its spread check is what catches this."""
    mutants.diffusion_scaled(monkeypatch, 2.0)
    caught(PANELS[name]()["verdict"])


@pytest.mark.parametrize("name", panels("A", "D"))
def test_halved_drift_fails_fig1_panel(name, monkeypatch, caught):
    mutants.drift_halved(monkeypatch)
    caught(PANELS[name]()["verdict"])


def test_doubled_diffusion_fails_validate(monkeypatch, caught, tmp_path):
    mutants.diffusion_scaled(monkeypatch, 2.0)
    code = main([*VALIDATE, "--out", str(tmp_path)])
    verdict = json.loads((tmp_path / "result.json").read_text())["verdict"]
    assert code == (0 if verdict == "pass" else 1)
    caught(verdict)


def test_halved_drift_fails_the_weak_order_of_the_lr_sweep(monkeypatch, caught):
    """A model wrong at O(1) has a weak error that does not vanish with lr: slope far from 1."""
    mutants.drift_halved(monkeypatch)
    caught(sweep()["verdict"])
