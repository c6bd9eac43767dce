"""``compsde sde`` and ``compsde validate``: result.json like simulate, one-line errors."""

from __future__ import annotations

import json

import pytest

from compsde.cli import main

SMALL = ["--steps", "40", "--runs", "30", "--no-progress", "--record-every", "10"]


def read(path) -> dict:
    return json.loads((path / "result.json").read_text())


def test_sde_writes_the_simulate_schema(tmp_path, capsys):
    assert main(["sde", "--method", "dcsgd:randk:k=2", "--out", str(tmp_path / "s"), *SMALL,
                 "--plot"]) == 0
    assert main(["simulate", "--method", "dcsgd:randk:k=2", "--out", str(tmp_path / "a"),
                 *SMALL]) == 0
    sde, alg = read(tmp_path / "s"), read(tmp_path / "a")
    assert set(sde) == set(alg)
    assert set(alg["config"]) <= set(sde["config"])
    assert sde["config"]["kind"] == "sde" and "rank one" in sde["config"]["moments"]
    assert (tmp_path / "s" / "loss.png").is_file()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["phase1", "phase3"])
def test_sde_phase_models(tmp_path, model):
    assert main(["sde", "--method", "dsignsgd", "--model", model, "--x0", "3",
                 "--out", str(tmp_path), *SMALL]) == 0
    assert read(tmp_path)["config"]["model"].startswith(model)


@pytest.mark.parametrize("args, message", [
    (["--dt", "0"], "dt must be"),
    (["--dt", "-0.5"], "dt must be"),
    (["--method", "dsgd", "--noise", "student-t:nu=2"], "does not exist"),
    (["--method", "dcsgd:randk:k=2", "--noise", "student-t:nu=1"], "does not exist"),
    (["--model", "phase3"], "method must be dsignsgd"),
    (["--landscape", "quadratic:d=3", "--method", "dcsgd:randk:k=9"], "k"),
])
def test_sde_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main(["sde", "--out", str(tmp_path), *SMALL, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_validate_command(tmp_path, capsys):
    code = main(["validate", "--method", "dsignsgd", "--lr", "0.02", "--out", str(tmp_path),
                 *SMALL, "--runs", "200", "--plot", "--lr-sweep", "0.04,0.02",
                 "--horizon", "0.4"])
    out = read(tmp_path)
    passed = out["verdict"] == "pass" and out["lr_sweep"]["verdict"] == "pass"
    assert code == (0 if passed else 1)   # the sweep's own verdict counts too
    assert {"algorithm", "sde", "max_relative_gap", "max_z", "lr_sweep"} <= set(out)
    assert {"quantity", "measured", "predicted", "tolerance", "rule"} <= set(out["lr_sweep"])
    assert len(out["lr_sweep"]["weak_error"]) == 2
    assert (tmp_path / "loss.png").is_file()
    assert "weak error ~ lr^" in capsys.readouterr().out


def test_validate_bad_sweep(tmp_path, capsys):
    assert main(["validate", "--out", str(tmp_path), *SMALL, "--lr-sweep", "a,b"]) == 2
    assert "lr-sweep must be" in capsys.readouterr().err
