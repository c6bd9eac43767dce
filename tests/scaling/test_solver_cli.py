"""The closed-form rules, the solver and ``compsde scale`` (including its error messages)."""

from __future__ import annotations

import json

import pytest

from compsde.cli import main
from compsde.scaling import (
    Setup,
    dcsgd_from_dsgd,
    dsignsgd_rules,
    heterogeneity_factor,
    level,
    solve,
    speed,
)

EXAMPLE = dict(lr=0.1, batch=32, agents=8, target="dcsgd:randk:ratio=0.1", L=2.0)


def test_dcsgd_rules_closed_forms():
    corr = 0.1 * 2.0 * 9 / (2 * 8)
    assert dcsgd_from_dsgd(0.1, 32, 8, 9.0, via="batch", L=2.0).config.batch == \
        pytest.approx(10 * 32 / (1 - corr))
    assert dcsgd_from_dsgd(0.1, 32, 8, 9.0, via="agents", L=2.0).config.agents == \
        pytest.approx(10 * 8 + 0.1 * 2.0 * 9 / 2)
    rule = dcsgd_from_dsgd(0.1, 32, 8, 9.0, via="lr", L=2.0, convention="T")
    assert rule.config.lr == pytest.approx(0.1 / (10 + corr))
    assert rule.steps_factor == pytest.approx(10 + corr)
    assert not rule.matches["speed_steps"]
    assert dcsgd_from_dsgd(0.1, 32, 8, 9.0, via="batch", first_order=True).config.batch == 320
    with pytest.raises(ValueError, match="L is required"):
        dcsgd_from_dsgd(0.1, 32, 8, 9.0, via="batch")
    # heterogeneous agents: 1+ω becomes mean((1+ω_i)σ_i²)/mean(σ_i²)
    assert heterogeneity_factor([1.0, 9.0], [1.0, 3.0]) == pytest.approx((2 + 90) / 10)


@pytest.mark.parametrize("via", ["batch", "agents", "lr"])
def test_rules_equalise_the_predicted_levels(via):
    rule = dcsgd_from_dsgd(0.1, 32, 8, 9.0, via=via, L=2.0)
    kw = {"L": 2.0, "sigma": 1.0, "nu": None}
    base = level(Setup("dsgd", "dsgd", 0.0, 0.1, 32, 8), **kw)
    c = rule.config
    assert level(Setup("dcsgd", "x", 9.0, c.lr, c.batch, c.agents), **kw) == pytest.approx(base)


@pytest.mark.parametrize("convention", ["T", "K"])
def test_dsignsgd_rules_keep_level_and_speed(convention):
    kw = {"L": 1.0, "sigma": 2.0, "nu": 3.0}
    base = Setup("dsignsgd", "dsignsgd", 0.0, 0.05, 16, 4)
    c = dsignsgd_rules(0.05, 16, 4, 2.0, convention).config
    new = Setup("dsignsgd", "dsignsgd", 0.0, c.lr, c.batch, c.agents)
    assert level(new, **kw) == pytest.approx(level(base, **kw))
    assert speed(new, per=convention, **kw) == pytest.approx(speed(base, per=convention, **kw))


def test_solver_one_knob_matches_the_rules():
    assert solve("dsgd", vary="batch", **EXAMPLE).target.batch == 361
    assert solve("dsgd", vary="agents", **EXAMPLE).target.agents == 81
    rec = solve("dsgd", vary="lr", **EXAMPLE)
    assert rec.target.lr == pytest.approx(0.1 / (10 + 0.1125), rel=1e-9)
    assert rec.matched == {"stationary_loss": True, "speed_time": True, "speed_steps": False}
    assert rec.steps_factor == pytest.approx(10.1125, rel=1e-9)


def test_solver_combinations_and_conventions():
    rec = solve("dsgd", vary="batch,agents", **EXAMPLE)
    assert rec.matched["stationary_loss"]
    assert rec.target.batch > 32 and rec.target.agents > 8     # the factor is split
    k = solve("dsgd", vary="lr,batch", convention="K", **EXAMPLE)
    assert k.target.lr == pytest.approx(0.1, rel=0.02)          # (K) keeps the step
    assert k.matched["stationary_loss"]
    sign = solve("dsignsgd", lr=0.1, batch=32, agents=8, target="dsignsgd", vary="lr,batch",
                 fixed={"agents": 32}, convention="K")
    assert (sign.target.lr, sign.target.batch) == (pytest.approx(0.2), 8)
    assert sign.matched["stationary_loss"] and sign.matched["speed_steps"]


@pytest.mark.parametrize("kwargs, pattern", [
    ({"vary": "momentum"}, r"vary must be one or more of lr, batch, agents.*momentum"),
    ({"vary": "batch", "target": "dcsgd:topk:ratio=0.1"}, r"target must be an unbiased"),
    ({"vary": "batch", "target": "dcsgd"}, r"target 'dcsgd' needs a compressor with an ω"),
    ({"vary": "batch", "target": "dcsgd:randk:k=3"}, r"depends on the dimension d"),
    ({"vary": "batch", "lr": 0.5}, r"lr must be < 0\.4706 .*2N/\(\(N \+ ω\)·L\)"),
    ({"vary": "batch", "L": None}, r"L is required"),
    ({"vary": "batch", "convention": "X"}, r"convention must be one of T, K"),
])
def test_solver_errors(kwargs, pattern):
    args = {**EXAMPLE, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        solve("dsgd", **args)


def test_scale_cli_table_and_json(tmp_path, capsys):
    argv = ["scale", "--baseline", "dsgd", "--lr", "0.1", "--batch", "32", "--agents", "8",
            "--target", "dcsgd:randk:ratio=0.1", "--vary", "batch", "--L", "2.0",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "knob" in out and "recommended" in out and "361" in out
    assert json.loads((tmp_path / "result.json").read_text())["verdict"] == "pass"
    assert main([*argv, "--json", "--no-check"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "unchecked" and data["check"] is None
    assert data["recommended"]["batch"] == 361
    assert data["matched"]["stationary_loss"] is True
    assert {row["knob"] for row in data["table"]} >= {"lr", "batch", "agents"}
    assert json.loads((tmp_path / "result.json").read_text())["recommended"]["batch"] == 361


@pytest.mark.parametrize("extra, words", [
    (["--vary", "foo", "--L", "2"], ["vary", "lr, batch, agents"]),
    (["--vary", "batch", "--L", "2", "--target", "dcsgd:sign"], ["target"]),
    (["--vary", "batch", "--L", "2", "--lr", "0.5"], ["lr must be <", "stability limit"]),
    (["--vary", "batch"], ["L is required", "--L"]),
])
def test_scale_cli_errors(tmp_path, capsys, extra, words):
    argv = ["scale", "--lr", "0.1", "--batch", "32", "--agents", "8", "--target",
            "dcsgd:randk:ratio=0.1", "--out", str(tmp_path)]
    # later flags win in click, so --lr/--target in ``extra`` override the defaults above
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    for word in words:
        assert word in err
