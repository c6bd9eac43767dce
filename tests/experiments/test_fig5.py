"""Figure 5 end to end at reduced size (same code path as ``compsde reproduce fig5 --quick``)."""

from __future__ import annotations

import json

import pytest

from compsde.cli import main
from compsde.experiments import fig5


def test_fig5_reduced(tmp_path):
    outcome = fig5.run(out=tmp_path, sizes={"runs": 100, "steps": 1200})
    assert outcome.verdict == "pass", {k: v["detail"] for k, v in outcome.panels.items()}
    rows = outcome.panels["a: DCSGD vs tail index"]["rows"]
    assert [r["observed"] for r in rows] == ["diverges", "never settles", "settles", "settles"]
    assert outcome.png.exists()


def test_spike_reference_is_the_gaussian_value():
    # mean/median of a χ²_4: 4 / 3.3567
    assert fig5.gaussian_spike_ratio(4) == pytest.approx(1.1916, abs=1e-3)


@pytest.mark.slow
def test_fig5_quick_cli(tmp_path):
    assert main(["reproduce", "fig5", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    data = json.loads((tmp_path / "fig5.json").read_text())
    assert data["verdict"] == "pass" and data["seconds"] < 180


def test_fig5_legends_sit_beside_the_panels(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(fig5, "save_figure", lambda fig, path: seen.append(fig) or path)
    monkeypatch.setattr(fig5.plt, "close", lambda fig: None)
    fig5.run(out=tmp_path, sizes={"runs": 8, "steps": 50})
    (fig,) = seen
    fig.canvas.draw()
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        assert not legend.get_window_extent().overlaps(ax.get_window_extent()), ax.get_title()
