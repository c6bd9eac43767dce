"""Titles of the simulate/sde pictures: readable names, short lines, the number of runs."""

from __future__ import annotations

from compsde.plotting import TITLE_WIDTH, readable_spec, run_title


def test_readable_specs():
    assert readable_spec("dsignsgd") == "DSignSGD"
    assert readable_spec("dcsgd:randk:ratio=0.2") == "DCSGD with randk (ratio = 0.2)"
    assert readable_spec("student-t:nu=1,scale=1/2") == "student-t (nu = 1, scale = 1/2)"


def test_run_title_has_short_lines_and_the_runs():
    config = {"method": "dcsgd:randk:ratio=0.2", "landscape": "quadratic:d=10,eig=0.01:100",
              "noise": "student-t:nu=1,scale=1/2/3/4/5/6/7/8", "lr": 0.01, "agents": 8,
              "batch": 4, "runs": 500, "lr_schedule": "inv-sqrt"}
    title = run_title("simulation", config)
    lines = title.splitlines()
    assert all(len(line) <= TITLE_WIDTH for line in lines)
    assert "500 runs" in lines[0] and "DCSGD with randk" in lines[0]
    assert "η = 0.01 (inv-sqrt), N = 8 agents, B = 4" in title
