"""Inputs that used to end in a traceback, be accepted silently or stop with a message naming
no flag: a landscape beyond the machine's memory, a knob given twice to ``--vary``, a seed past
64 bits, and ``advise`` at a small batch."""

from __future__ import annotations

import pytest

import compsde
from compsde.cli import main
from compsde.landscapes import check_vector_memory

SMALL = ["--steps", "5", "--runs", "2", "--no-progress"]


class WorkStarted(AssertionError):
    """Raised by the patched work functions: the command started work before its checks."""


def _forbid(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    def work(*args, **kwargs):
        raise WorkStarted(target)
    monkeypatch.setattr(target, work)


def _one_line(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


@pytest.mark.parametrize("command", ["simulate", "sde", "validate"])
def test_a_landscape_beyond_memory_is_one_line_with_the_memory_it_needs(command, tmp_path,
                                                                         monkeypatch, capsys):
    monkeypatch.setattr("compsde.landscapes.physical_memory", lambda: 128 * 2**30)
    code = main([command, "--landscape", "quadratic:d=100000000000", *SMALL,
                 "--out", str(tmp_path)])
    line = _one_line(code, capsys.readouterr().err, "--landscape", "800 GB")
    assert "137 GB of memory" in line


def test_the_memory_check_compares_with_the_machine(monkeypatch):
    check_vector_memory("landscape quadratic:d=1000", 1000, memory=8000)       # fits exactly
    with pytest.raises(ValueError, match=r"needs 8.01 kB .* more than this machine's 8 kB"):
        check_vector_memory("landscape quadratic:d=1001", 1001, memory=8000)
    monkeypatch.setattr("compsde.landscapes.physical_memory", lambda: 128 * 2**30)
    with pytest.raises(ValueError, match="quadratic:d=100000000000,eig=1:2 needs 800 GB"):
        compsde.landscapes.make("quadratic:d=100000000000,eig=1:2")


def test_vary_refuses_a_knob_named_twice(tmp_path, monkeypatch, capsys):
    _forbid(monkeypatch, "compsde.cli.scale_cmd.write_json")
    code = main(["scale", "--baseline", "dsgd", "--lr", "0.1", "--batch", "32", "--agents", "8",
                 "--target", "dcsgd:randk:ratio=0.1", "--vary", "batch,batch", "--L", "2.0",
                 "--out", str(tmp_path)])
    _one_line(code, capsys.readouterr().err, "--vary", "batch")
    assert not (tmp_path / "result.json").exists()
    with pytest.raises(ValueError, match="vary names lr more than once"):
        compsde.scaling.solve("dsgd", lr=0.1, batch=32, agents=8, target="dsignsgd",
                              vary=["lr", "batch", "LR"])


@pytest.mark.parametrize("run", [compsde.simulate, compsde.sde.simulate_sde])
def test_a_seed_past_64_bits_is_refused_naming_seed(run):
    kwargs = dict(lr=0.01, steps=5, runs=2)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 9223372036854775807\]"):
        run("dsgd", "quadratic:d=2", "gaussian:scale=1", seed=2**70, **kwargs)
    run("dsgd", "quadratic:d=2", "gaussian:scale=1", seed=2**63 - 1, **kwargs)   # the largest


@pytest.mark.needs_data("fashion-mnist")
def test_advise_at_batch_4_measures(tmp_path, capsys):
    """At B = 4 most MLP gradient coordinates are exactly 0 in many mini-batches; the tail fit
    leaves collapsed columns out (tests/diagnose/test_tails.py) instead of failing."""
    code = main(["advise", "--model", "mlp", "--data", "fashion-mnist", "--batch", "4",
                 "--samples", "32", "--warmup", "20", "--curvature-batch", "64",
                 "--codec-time", "none", "--threads", "1", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "tail: ν̂ = " in captured.out and "recommendation:" in captured.out
    assert (tmp_path / "result.json").is_file()
