"""The demo's three verdicts against wrong libraries (reduced size: 100 runs, 1500 steps)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutants

from compsde.cli import main
from compsde.experiments import demo

SIZE = {"runs": 100, "steps": 1500, "seed": 0}
GAUSSIAN, UNBIASED, SIGN = demo.PANELS


def test_real_code_passes_every_demo_verdict():
    outcome = demo.run(**SIZE)
    assert {k: p["verdict"] for k, p in outcome["panels"].items()} == {
        GAUSSIAN: "pass", UNBIASED: "pass", SIGN: "pass"}
    for entry in outcome["panels"].values():
        assert {"quantity", "measured", "predicted", "tolerance", "rule"} <= set(entry)


def test_randk_without_compression_fails_the_gaussian_ratio(monkeypatch, caught):
    mutants.randk_returns_input(monkeypatch)
    caught(demo.run(**SIZE)["panels"][GAUSSIAN]["verdict"])


def test_doubled_omega_in_the_theory_fails_the_gaussian_ratio(monkeypatch, caught):
    mutants.omega_doubled_in_theory(monkeypatch)
    caught(demo.run(**SIZE)["panels"][GAUSSIAN]["verdict"])


def test_gaussian_student_t_fails_the_cauchy_contrast(monkeypatch, caught):
    mutants.student_t_draws_gaussian(monkeypatch)
    caught(demo.run(**SIZE)["panels"][UNBIASED]["verdict"])


def test_sign_compression_off_fails_dsignsgd_under_cauchy(monkeypatch, caught, tmp_path):
    """Through the CLI: `compsde demo` exits 1 when a verdict fails."""
    mutants.sign_compression_off(monkeypatch)
    code = main(["demo", "--runs", str(SIZE["runs"]), "--steps", str(SIZE["steps"]),
                 "--out", str(tmp_path)])
    result = json.loads((tmp_path / "result.json").read_text())
    assert code == 1 and result["verdict"] == "fail"
    caught(result["panels"][SIGN]["verdict"])
