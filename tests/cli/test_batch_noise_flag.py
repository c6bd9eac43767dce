"""``--batch-noise`` on simulate and validate (THEORY.md §1a)."""

from __future__ import annotations

import json

from compsde.cli import main


def test_simulate_records_batch_noise(tmp_path):
    assert main(["simulate", "--landscape", "quadratic:d=2", "--batch", "4", "--batch-noise",
                 "mean", "--steps", "20", "--runs", "10", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "result.json").read_text())["config"]
    assert config["batch_noise"] == "mean" and config["batch"] == 4


def test_validate_with_averaged_batches_passes_and_a_bad_value_exits_2(tmp_path, capsys):
    """The algorithm averages 4 Gaussian draws; its SDE uses σ/√B: they agree."""
    args = ["validate", "--method", "dsgd", "--landscape", "quadratic:d=2", "--lr", "0.05",
            "--steps", "200", "--runs", "500", "--batch", "4", "--no-progress"]
    assert main([*args, "--batch-noise", "mean", "--out", str(tmp_path / "ok")]) == 0
    result = json.loads((tmp_path / "ok" / "result.json").read_text())
    assert result["config"]["batch_noise"] == "mean" and result["verdict"] == "pass"
    assert result["sde_config"]["batch_noise"] == "scale"
    assert main([*args, "--batch-noise", "sum", "--out", str(tmp_path / "bad")]) == 2
    assert "--batch-noise" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
