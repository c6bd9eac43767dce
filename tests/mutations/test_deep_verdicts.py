"""Figures 2 and 4 at their quick presets, judged out of sample, and with a wrong scaling rule.

``compsde reproduce fig2|fig4 --quick --jobs 2`` run once into a shared folder; the mutants
then reuse its cache for every arm they leave unchanged and train only the arms the wrong rule
moves (the rules choose configurations; they do not change how a configuration trains).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutants

from compsde.cli import main
from compsde.experiments import fig2, fig4

pytestmark = [pytest.mark.timeout(2400), pytest.mark.needs_data("fashion-mnist")]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deep")


def reproduce(name: str, out: Path) -> dict:
    code = main(["reproduce", name, "--quick", "--jobs", "2", "--out", str(out),
                 "--no-progress"])
    result = json.loads((out / f"{name}.json").read_text())
    assert code == (0 if result["verdict"] == "pass" else 1)
    return result


@pytest.mark.parametrize("name", ["fig2", "fig4"])
def test_real_code_passes_out_of_sample(name, out):
    result = reproduce(name, out)
    module = {"fig2": fig2, "fig4": fig4}[name]
    assert result["training_seeds_from"] == 1000 * module.SEED_OFFSET
    assert min(module.PRESET_SEEDS) + module.SEED_OFFSET > max(module.PRESET_SEEDS)
    failing = {k: p["detail"] for k, p in result["panels"].items() if p["verdict"] != "pass"}
    assert not failing, failing


def test_dcsgd_rule_without_the_omega_factor_fails_fig2(monkeypatch, caught, out):
    mutants.dcsgd_rule_ignores_omega(monkeypatch)
    result = reproduce("fig2", out)
    caught(result["verdict"])


def test_dsignsgd_rule_that_keeps_the_agents_fails_fig4(monkeypatch, caught, out):
    mutants.dsignsgd_rule_keeps_agents(monkeypatch)
    result = reproduce("fig4", out)
    caught(result["verdict"])
