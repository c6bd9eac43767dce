"""The command line: result.json schema, PNGs, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from compsde.cli import main


def test_simulate_writes_result_json_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["simulate", "--method", "dcsgd:randk:ratio=0.5", "--landscape", "quadratic:d=4",
                 "--noise", "gaussian:scale=1/2", "--agents", "2", "--steps", "200", "--runs",
                 "16", "--out", str(out), "--plot", "--no-progress"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    for key in ("steps", "loss_mean", "loss_q05", "loss_q95", "diverged_fraction", "config"):
        assert key in result
    assert result["config"]["method"] == "dcsgd:randk:ratio=0.5"
    assert result["config"]["agents"] == 2
    assert len(result["loss_mean"]) == len(result["steps"])
    assert (out / "loss.png").stat().st_size > 10_000
    assert "final loss mean" in capsys.readouterr().out


@pytest.mark.parametrize("args, name", [
    (["--lr", "-1"], "lr"),
    (["--agents", "0"], "agents"),
    (["--runs", "0"], "runs"),
    (["--method", "dcsgd:randk:k=99"], "k"),
    (["--noise", "student-t:nu=-1"], "nu"),
    (["--noise", "gaussian:scale=1/2/3"], "scale"),
    (["--landscape", "banana"], "landscape"),
    (["--dtype", "int8"], "dtype"),
    (["--steps", "many"], "steps"),
])
def test_bad_input_prints_one_line_and_exits_2(tmp_path, capsys, args, name):
    code = main(["simulate", "--out", str(tmp_path), "--steps", "5", "--runs", "2",
                 "--agents", "2", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert name in err


def test_console_script_exit_code_for_user_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "compsde", "simulate", "--lr", "0",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --lr must be")
    assert "Traceback" not in proc.stderr


def test_unknown_subcommand_is_one_line(capsys):
    assert main(["frobnicate"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
