"""Figure 3 end to end at reduced size (same code path as ``compsde reproduce fig3 --quick``)."""

from __future__ import annotations

import json

import pytest

from compsde.cli import main
from compsde.experiments import fig3, load_all


def test_fig3_reduced(tmp_path):
    outcome = fig3.run(out=tmp_path, sizes={"runs": 200, "speed_runs": 100,
                                            "speed_steps": 1500})
    assert outcome.verdict == "pass", outcome.panels
    left = outcome.panels["left: phase bounds"]
    assert set(left["phase_start_step"]) == {"1", "2", "3"}
    assert all(v is not None for v in left["phase_start_step"].values())
    right = outcome.panels["right: linear speedup"]
    assert [r["agents"] for r in right["rows"]] == [1, 2, 4, 8, 16]
    batches = outcome.panels["batch: mean of B draws"]
    assert sorted({r["batch"] for r in batches["rows"]}) == [4, 16]
    unequal = outcome.panels["unequal agents: σ_i = 1/2/3/4"]
    assert [r["method"] for r in unequal["rows"]] == ["dsgd", "dcsgd", "dsignsgd"]
    assert unequal["rows"][1]["omegas"] == [0.0, 1.0, 3.0, 7.0]
    cauchy = [r for r in batches["rows"] if r["noise"].startswith("student-t")]
    assert cauchy and all(r["prediction"] > 3 * r["convention_prediction"] for r in cauchy)
    assert outcome.png.exists() and outcome.png.stat().st_size > 10_000
    assert "fig3" in load_all()
    again = fig3.run(out=tmp_path, sizes={"runs": 200, "speed_runs": 100,
                                          "speed_steps": 1500})   # served from the cache
    assert again.panels == outcome.panels


@pytest.mark.slow
def test_fig3_quick_cli(tmp_path):
    assert main(["reproduce", "fig3", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    data = json.loads((tmp_path / "fig3.json").read_text())
    assert data["verdict"] == "pass" and data["seconds"] < 180
