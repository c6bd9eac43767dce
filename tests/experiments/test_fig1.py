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
    assert len(report["panels"]["E"]["checks"]) == 2   # mean (SDE), exact discrete curve
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


def test_bands_on_log_axes_stay_positive_and_smooth():
    """A linear band cut at zero drew spikes on panel B's log axis; the log band does not."""
    import numpy as np

    from compsde.experiments.fig1_plot import band_limits

    mean = np.full(50, 1e-3)
    se = np.linspace(0.0, 2e-3, 50)                 # se from 0 to twice the mean
    low, high = band_limits(mean, se, log=True)
    assert (low > 0).all() and np.all(np.diff(low) < 0) and np.all(np.diff(high) > 0)
    np.testing.assert_allclose(low * high, mean**2)  # symmetric about the mean in log space
    small_low, small_high = band_limits(mean[:2], np.array([1e-6, 1e-6]), log=True)
    np.testing.assert_allclose([small_low[0], small_high[0]], [1e-3 - 1.96e-6, 1e-3 + 1.96e-6],
                               rtol=1e-5)        # where se ≪ mean, the ±1.96 se band
    lin_low, lin_high = band_limits(mean, se, log=False)
    np.testing.assert_allclose(lin_high - lin_low, 2 * 1.96 * se)
