"""``advise --verify STEPS --launcher torchrun``: the arms run as real ranks from the measured
point, and the baseline's losses equal the in-process simulation's (same model, batches and
method: DSGD's mean of two gradients is exact)."""

from __future__ import annotations

import json

import pytest

from compsde.cli import main

ADVISE = ["advise", "--model", "mlp:hidden=32", "--data", "synthetic:n=2048,shape=1x8x8",
          "--batch", "8", "--agents", "2", "--lr", "0.05", "--samples", "64", "--warmup", "5",
          "--curvature-batch", "64", "--threads", "1", "--json",
          "--bandwidth", "1mbit"]          # a slow link: the advice compresses


def _verify(tmp_path, launcher: str) -> dict:
    code = main([*ADVISE, "--verify", "20", "--launcher", launcher, "--out",
                 str(tmp_path / launcher)])
    assert code in (0, 1)
    return json.loads((tmp_path / launcher / "result.json").read_text())["verify"]


def test_torchrun_arms_match_the_in_process_ones(tmp_path, capsys):
    ranks = _verify(tmp_path, "torchrun")
    local = _verify(tmp_path, "inprocess")
    assert ranks["launcher"] == "torchrun" and local["launcher"] == "inprocess"
    assert [r["spec"] for r in ranks["runs"]] == [r["spec"] for r in local["runs"]]
    for run in ranks["runs"]:
        assert run["failed"] is None and len(run["losses"]) == 20
    assert ranks["runs"][0]["losses"] == pytest.approx(local["runs"][0]["losses"], rel=1e-6)
    assert ranks["recommendations"] and ranks["runs"][1]["spec"] != "dsgd"
    for entry in ranks["recommendations"]:
        assert entry["time"] is None                   # loopback ranks: the link is not priced
        assert entry["claim"]["verdict"] in ("pass", "fail")
        assert entry["claim"]["measured"] == pytest.approx(
            next(e for e in local["recommendations"] if e["spec"] == entry["spec"])
            ["claim"]["measured"], abs=0.05)


def test_launcher_needs_verify(tmp_path, capsys):
    assert main([*ADVISE, "--launcher", "torchrun", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --launcher needs --verify STEPS (it says how --verify runs)"
