"""Every result.json records the versions and every setting that changes its numbers, and every
file written honours the user's umask (docs/DESIGN.md, "Atomic writes": results are shared)."""

from __future__ import annotations

import inspect
import json
import os
import platform
import stat

import pytest
import torch

import compsde
from compsde.cli import main
from compsde.io import file_mode, write_atomic, write_json
from compsde.sde import simulate_sde


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one afterwards."""
    previous = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)
    yield set_mask
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _versions_ok(data: dict) -> None:
    versions = data["versions"]
    assert versions["compsde"] == compsde.__version__
    assert versions["torch"] == torch.__version__
    assert versions["python"] == platform.python_version()


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600),
                                        (0o002, 0o664)])
def test_files_honour_the_umask(mask, mode, umask, tmp_path):
    umask(mask)
    assert file_mode() == mode
    assert _mode(write_json(tmp_path / "a.json", {"x": 1})) == mode
    assert _mode(write_atomic(tmp_path / "b.bin", b"x")) == mode


def test_cli_results_and_pictures_honour_the_umask(umask, tmp_path, capsys):
    umask(0o027)
    out = tmp_path / "run"
    assert main(["simulate", "--steps", "5", "--runs", "4", "--plot", "--no-progress",
                 "--out", str(out)]) == 0
    assert _mode(out / "result.json") == 0o640 and _mode(out / "loss.png") == 0o640


SIMULATE_NOT_RECORDED = {"progress"}              # does not change the numbers
SDE_NOT_RECORDED = {"progress", "model", "record_mean_x"}   # model: recorded by its name
SDE_RECORDED_AS = {"stability": "stability_correction"}


def test_simulate_records_every_argument(tmp_path):
    result = compsde.simulate("dcsgd:randk:ratio=0.5", "quadratic:d=4", "gaussian", lr=0.05,
                              steps=6, agents=2, runs=3, seed=1, x0=[1, 2, 3, 4],
                              record_every=2, memory_budget=1 << 20)
    data = json.loads(result.save(tmp_path).read_text())
    _versions_ok(data)
    names = set(inspect.signature(compsde.simulate).parameters) - SIMULATE_NOT_RECORDED
    assert names <= set(data["config"]), names - set(data["config"])
    assert data["config"]["memory_budget"] == 1 << 20
    assert data["config"]["x0"] == [1.0, 2.0, 3.0, 4.0]


def test_sde_records_every_argument(tmp_path):
    result = simulate_sde("dsignsgd", "quadratic:d=2", "student-t:nu=3", lr=0.05, steps=4,
                          runs=3, moments="monte-carlo", samples=8, memory_budget=1 << 20)
    data = json.loads(result.save(tmp_path).read_text())
    _versions_ok(data)
    names = {SDE_RECORDED_AS.get(n, n) for n in inspect.signature(simulate_sde).parameters}
    names -= SDE_NOT_RECORDED
    assert names <= set(data["config"]), names - set(data["config"])
    assert data["config"]["samples"] == 8 and data["config"]["memory_budget"] == 1 << 20


def test_validate_scale_and_demo_record_versions_and_settings(tmp_path, capsys):
    assert main(["validate", "--steps", "5", "--runs", "4", "--no-progress",
                 "--out", str(tmp_path / "v")]) in (0, 1)
    _versions_ok(json.loads((tmp_path / "v" / "result.json").read_text()))
    assert main(["scale", "--baseline", "dsgd", "--lr", "0.1", "--batch", "32", "--agents",
                 "8", "--target", "dcsgd:randk:ratio=0.1", "--vary", "batch", "--L", "2.0",
                 "--dim", "100", "--out", str(tmp_path / "s")]) == 0
    scale = json.loads((tmp_path / "s" / "result.json").read_text())
    _versions_ok(scale)
    assert scale["command"]["L"] == 2.0 and scale["command"]["dim"] == 100
    assert scale["command"]["target"] == "dcsgd:randk:ratio=0.1"
    assert main(["demo", "--runs", "4", "--steps", "30", "--out", str(tmp_path / "d")]) in (0, 1)
    demo = json.loads((tmp_path / "d" / "result.json").read_text())
    _versions_ok(demo)
    assert demo["config"]["batch"] == 1 and demo["config"]["runs"] == 4


def test_train_and_advise_record_versions(tmp_path, capsys):
    assert main(["train", "--simulate-agents", "2", "--model", "mlp:hidden=8", "--data",
                 "synthetic:n=128,shape=1x8x8", "--batch", "8", "--steps", "3", "--threads",
                 "1", "--no-progress", "--out", str(tmp_path / "t")]) == 0
    train = json.loads((tmp_path / "t" / "result.json").read_text())
    _versions_ok(train)
    assert {"model", "data", "method", "lr", "batch", "seed", "steps", "log_every"} \
        <= set(train["config"])
    assert main(["advise", "--model", "mlp:hidden=8", "--data", "synthetic:n=512,shape=1x8x8",
                 "--batch", "16", "--samples", "16", "--warmup", "2", "--curvature-batch",
                 "32", "--compute-time", "1ms", "--out", str(tmp_path / "a")]) == 0
    _versions_ok(json.loads((tmp_path / "a" / "result.json").read_text()))
