"""Figure 1 end to end on a reduced size (the "test" preset: same code path, fewer runs and
shorter horizons than ``--quick``), through the registry as ``compsde reproduce fig1`` runs it."""

from __future__ import annotations

import json

import pytest

from compsde.experiments import fig1, load_all
from compsde.experiments.fig1_mlp import load_subset


@pytest.mark.needs_data("fashion-mnist")
def test_fig1_reduced_run_passes_all_panels(tmp_path, monkeypatch):
    monkeypatch.setitem(fig1.CONFIGS, "quick", fig1.CONFIGS["test"])
    outcome = load_all()["fig1"].run(tmp_path, preset="quick", seed=0)
    report = json.loads((tmp_path / "fig1.json").read_text())
    assert set(report["panels"]) == {"A", "B", "C", "D", "E"}
    assert len(report["panels"]["E"]["checks"]) == 2      # the mean and the spread
    failing = {k: v["detail"] for k, v in report["panels"].items() if v["verdict"] != "pass"}
    assert not failing, failing
    assert outcome.verdict == "pass" and report["verdict"] == "pass"
    assert set(report["panels"]["C"]["checks"]) == {"full SDE", "phase 1", "phase 2",
                                                     "phase 3"}
    assert (tmp_path / "fig1.png").stat().st_size > 50_000
    assert set(report["curves"]["C"]) >= {"algorithm", "SDE", "phase1", "phase2-slow",
                                          "phase2-fast", "phase3"}


def test_missing_dataset_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPSDE_FASHION_MNIST", str(tmp_path))
    with pytest.raises(ValueError, match="dataset-fashion-mnist"):
        load_subset(10)
