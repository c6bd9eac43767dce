"""Environment variables are checked before any work, and the trainer's usage names the way
it was started."""

from __future__ import annotations

import subprocess
import sys

from compsde.cli import main


def test_a_bad_compsde_native_is_one_line_exit_2_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COMPSDE_NATIVE", "maybe")
    out = tmp_path / "o"
    code = main(["simulate", "--method", "dsgd", "--steps", "5", "--runs", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: COMPSDE_NATIVE must be one of")
    assert len(err.splitlines()) == 1 and not (out / "result.json").exists()


def test_the_trainer_checks_it_too(tmp_path, capsys, monkeypatch):
    from compsde.distributed.train import main as train_main

    monkeypatch.setenv("COMPSDE_NATIVE", "maybe")
    assert train_main(["--simulate-agents", "2", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: COMPSDE_NATIVE must be one of")


def test_module_usage_names_the_module():
    done = subprocess.run([sys.executable, "-m", "compsde.distributed.train", "-h"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m compsde.distributed.train")
