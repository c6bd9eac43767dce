"""The advisor: its predictions match the closed forms and simulation; it recommends DSignSGD
under Cauchy noise and what its own prediction says is best otherwise; the CLI works.

Tolerances (fixed seeds, never tuned):
- closed forms: the predicted DSGD loss uses the Welford ``V = Σ Var``; under Gaussian noise
  ``V̂/V`` has relative se ``√(2/(M d))``; we allow 5 se. DSignSGD's uses ``S2 = Σσ̂²`` whose
  relative se is ``2·log_scale_se``.
- simulation: the **order** of the stationary losses must match exactly (adjacent predictions
  differ by ≥ 1.6×). For Gaussian noise also ``|sim/pred − 1| ≤ ηL/2 + 5(se_sim/sim + se_meas)``:
  ηL/2 bounds the order-1 SDE's discretisation error (exact discrete DSGD: 1/(1 − ηλ/2)).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from compsde import landscapes, noise, simulate
from compsde.advise import advise, comm_seconds, parse_bandwidth, parse_latency, table
from compsde.advise.network import collective_for, message_bytes
from compsde.cli import main
from compsde.diagnose import measure_gradients, measure_landscape, measure_model
from compsde.io import write_json
from compsde.nn.data import make_synthetic
from compsde.nn.models import make_model
from compsde.theory import QuadraticModel, stationary_loss

LR, AGENTS = 0.05, 4


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one intra-op thread (see tests/diagnose/conftest.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def measure_quadratic(spec: str, generator, *, d=20, eig="0.5:2", samples=256, x=0.0,
                      compressors=("randk:ratio=0.25",)):
    land = landscapes.make(f"quadratic:d={d}" + (f",eig={eig}" if eig else ""))
    m = measure_landscape(land, noise.make(spec), x=torch.full((d,), x, dtype=torch.float64),
                          samples=samples, generator=generator, compressors=list(compressors))
    return land, m


def test_predictions_match_the_closed_forms(generator):
    d, sigma, samples = 100, 0.7, 256
    _, m = measure_quadratic(f"gaussian:scale={sigma}", generator, d=d, eig=None,
                             samples=samples)
    a = advise(m, lr=LR, agents=AGENTS)
    se_v = math.sqrt(2 / (samples * d))
    se_s2 = 2 * m.fit.log_scale_se
    model = QuadraticModel("dsgd", [1.0] * d, [[sigma] * d] * AGENTS, LR, [0.0] * d)
    exact = stationary_loss(model, kind="sde")                      # η d σ²/(4N), H = I
    assert exact == pytest.approx(LR * d * sigma**2 / (4 * AGENTS))
    assert abs(a.by_spec("dsgd").stationary_loss / exact - 1) <= 5 * se_v
    omega = 3.0
    rk = QuadraticModel("dcsgd", [1.0] * d, [[sigma] * d] * AGENTS, LR, [0.0] * d,
                        omegas=[omega] * AGENTS)
    assert abs(a.by_spec("dcsgd:randk:ratio=0.25").stationary_loss
               / stationary_loss(rk, kind="sde") - 1) <= 5 * se_v
    sign = a.by_spec("dsignsgd")               # at η_s = ησ/ℓ: level ησ²/(4ℓ²N) = (π/2)·DSGD
    ell = math.sqrt(2 / math.pi)
    assert sign.lr == pytest.approx(LR * sigma / ell, rel=5 * m.fit.log_scale_se)
    sign_model = QuadraticModel("dsignsgd", [1.0] * d, [[sigma] * d] * AGENTS, sign.lr,
                                [0.0] * d)
    assert abs(sign.stationary_loss / stationary_loss(sign_model, kind="sde") - 1) <= \
        5 * se_s2 + 5 * m.fit.log_scale_se     # its lr carries the scale error once more
    assert a.by_spec("dsgd").rate == 1.0 and sign.rate == 1.0


@pytest.mark.parametrize("spec", ["gaussian:scale=1", "student-t:nu=3,scale=1"])
def test_predicted_order_matches_simulation(spec, generator):
    land, m = measure_quadratic(spec, generator)
    a = advise(m, lr=LR, agents=AGENTS)
    preds = [p for p in a.predictions if p.finite]
    assert {p.spec for p in preds} == {"dsgd", "dcsgd:randk:ratio=0.25", "dsignsgd"}
    law = noise.make(spec)
    sims = {}
    for p in preds:
        result = simulate(p.spec, land, law, lr=p.lr, steps=600, agents=AGENTS, runs=32,
                          seed=7, x0=0.0, record_every=10)
        sims[p.spec] = result.tail_mean(0.7)
    by_pred = sorted(preds, key=lambda p: p.stationary_loss)
    by_sim = sorted(preds, key=lambda p: sims[p.spec][0])
    assert [p.spec for p in by_pred] == [p.spec for p in by_sim], (
        {p.spec: (p.stationary_loss, sims[p.spec]) for p in preds})
    # the paper's message: at equal speed sign beats DSGD under heavy tails, not under Gaussian
    first = "dsignsgd" if "student" in spec else "dsgd"
    assert by_pred[0].spec == first
    if spec.startswith("gaussian"):
        L = a.curvature
        se_meas = math.sqrt(2 / (m.samples * m.d)) + 2 * m.fit.log_scale_se
        for p in preds:
            mean, se = sims[p.spec]
            assert abs(mean / p.stationary_loss - 1) <= LR * L / 2 + 5 * (se / mean + se_meas)


def mlp_measurement(inject: str, generator, samples: int = 32):
    data = make_synthetic(n=64, shape=(1, 8, 8), classes=10, seed=1)
    model = make_model("mlp:hidden=16", data.image_shape, data.classes, seed=2)
    x, y = data.train_batch(torch.arange(64))

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target)

    return measure_model(model, loss_fn, lambda _: (x, y), samples=samples, batch=64,
                         curvature_data=(x, y), inject=noise.make(inject),
                         generator=generator,
                         compressors=["randk:ratio=0.1", "natural", "qsgd:levels=16"])


def test_cauchy_noise_makes_it_recommend_dsignsgd(generator, tmp_path):
    m = mlp_measurement("student-t:nu=1,scale=0.01", generator)
    assert m.fit.nu <= 2
    a = advise(m, lr=LR, agents=AGENTS, bandwidth=parse_bandwidth("1gbit"))
    assert a.recommendation is not None and a.recommendation["spec"] == "dsignsgd"
    for p in a.predictions:
        if p.method != "dsignsgd":
            assert p.stationary_loss is None and "§6" in p.loss_note
    assert "no stationary loss" in a.recommendation["why"] or "no mean" in \
        a.recommendation["why"]
    text = table(a)
    assert "none" in text and "recommendation: dsignsgd" in text
    write_json(tmp_path / "r.json", a.to_dict())          # JSON-able
    assert json.loads((tmp_path / "r.json").read_text())["reference"] == "dsignsgd"


def stable(shape: tuple[int, ...], alpha: float, generator: torch.Generator) -> torch.Tensor:
    """Symmetric α-stable draws by Chambers–Mallows–Stuck (as in tests/diagnose/test_tails)."""
    v = (torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5) * math.pi
    w = -torch.rand(shape, generator=generator, dtype=torch.float64).log()
    return (torch.sin(alpha * v) / torch.cos(v) ** (1 / alpha)
            * (torch.cos(v - alpha * v) / w) ** ((1 - alpha) / alpha))


def test_alpha_stable_noise_is_caught_by_hill(generator):
    # Symmetric α-stable (α = 1.5) noise has no variance, yet a Student-t fit of its body gives
    # ν̂ > 2; the Hill index catches it. Its se at n = 64·8000 (k = 715) is 1.5/√715 = 0.056,
    # so α̂ + 2 se < 2 holds with > 6 se to spare (second-order bias ∝ (k/n)^α, negligible).
    d = 8000
    grad = torch.linspace(-1, 1, d, dtype=torch.float64)
    grads = (grad + 0.3 * stable((d,), 1.5, generator) for _ in range(64))
    m = measure_gradients(grads, samples=64, generator=generator, max_coords=d,
                          compressors=["natural"])
    assert m.fit.nu > 2 and not m.finite_variance
    assert "Hill" in m.variance_verdict()
    a = advise(m, lr=LR, agents=AGENTS)
    assert a.by_spec("dsgd").stationary_loss is None
    assert "infinite variance" in a.by_spec("dcsgd:natural").loss_note
    assert a.recommendation["spec"] == "dsignsgd"


def test_small_gaussian_noise_recommends_its_own_best(generator):
    land, m = measure_quadratic("gaussian:scale=0.05", generator, d=50, x=0.5,
                                compressors=("randk:ratio=0.25", "natural", "qsgd:levels=8"))
    free = advise(m, lr=LR, agents=AGENTS, compute_seconds=1e-3)
    slow = advise(m, lr=LR, agents=AGENTS, compute_seconds=1e-3,
                  bandwidth=parse_bandwidth("1mbit"), latency=0.0)
    for a in (free, slow):
        finite = [p for p in a.predictions if p.finite]
        best = min(finite, key=lambda p: p.score)
        assert a.recommendation["spec"] == best.spec
        assert a.recommendation["batch"] == best.match_batch
        # at its matched batch the recommended method's predicted loss is the reference's
        assert best.stationary_loss * a.batch / best.match_factor == \
            pytest.approx(a.by_spec(a.reference).stationary_loss)
    # communication free: compression only costs (loss × (1+ω)/ρ or π/2 at equal speed)
    assert free.recommendation["spec"] == "dsgd"
    # a slow link makes a compressed method cheaper than DSGD by its own prediction
    assert slow.recommendation["spec"] != "dsgd"
    assert slow.by_spec(slow.recommendation["spec"]).score < slow.by_spec("dsgd").score
    # and running it as recommended reaches DSGD's loss (simulation, same tolerance band)
    rec = slow.by_spec(slow.recommendation["spec"])
    law = noise.make("gaussian:scale=0.05")
    runs = {}
    for spec, lr, batch in (("dsgd", LR, 1), (rec.spec, rec.match_lr, rec.match_batch)):
        runs[spec] = simulate(spec, land, law, lr=lr, steps=800, agents=AGENTS,
                              batch=batch, runs=64, seed=3, x0=0.0,
                              record_every=10).tail_mean(0.6)
    (ref, ref_se), (got, got_se) = runs["dsgd"], runs[rec.spec]
    assert got <= ref * (1 + LR * slow.curvature / 2) + 5 * math.hypot(ref_se, got_se)


def test_network_model():
    assert parse_bandwidth("1gbit") == 1.25e8
    assert parse_bandwidth("2GB/s") == 2e9
    assert parse_latency("50us") == pytest.approx(5e-5)
    for bad, name in (("fast", "bandwidth"), ("-1gbit", "bandwidth")):
        with pytest.raises(ValueError, match=name):
            parse_bandwidth(bad)
    with pytest.raises(ValueError, match="latency"):
        parse_latency("soon")
    # ring allreduce: 2(N−1)α + 2(N−1)/N · S/β; all-gather: (N−1)α + (N−1) S/β
    assert comm_seconds("allreduce", 1000, 4, 1e6, 1e-4) == pytest.approx(6e-4 + 1.5e-3)
    assert comm_seconds("all_gather", 1000, 4, 1e6, 1e-4) == pytest.approx(3e-4 + 3e-3)
    assert comm_seconds("allreduce", 1000, 1, 1e6, 1e-4) == 0.0
    from compsde import compressors
    assert collective_for("dsgd", None) == "allreduce"
    assert collective_for("dcsgd", compressors.make("randk:ratio=0.1")) == "allreduce"
    assert collective_for("dcsgd", compressors.make("natural")) == "all_gather"
    assert collective_for("dsignsgd", None) == "all_gather"
    assert message_bytes("dsgd", None, 1000) == 4000
    assert message_bytes("dsignsgd", None, 1001) == 126
    assert message_bytes("dcsgd", compressors.make("randk:ratio=0.1"), 1000) == 400


def test_advise_rejects_bad_input(generator):
    _, m = measure_quadratic("gaussian:scale=1", generator, d=10, samples=16)
    for kwargs, name in (({"lr": 0.0}, "lr"), ({"agents": 0}, "agents"),
                         ({"batch": 0}, "batch"), ({"batch": 7}, "batch"),
                         ({"candidates": ["natural"]}, "candidates"),
                         ({"bandwidth": -1.0}, "bandwidth")):
        args = {"lr": LR, "agents": AGENTS} | kwargs
        with pytest.raises(ValueError, match=name):
            advise(m, **args)


FAST = ["advise", "--model", "mlp:hidden=8", "--data", "synthetic:n=512,shape=1x8x8",
        "--batch", "16", "--samples", "16", "--warmup", "5", "--curvature-batch", "64",
        "--compute-time", "1ms"]


def test_cli_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "adv"
    assert main([*FAST, "--bandwidth", "1gbit", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "result.json").read_text())
    assert printed == saved
    assert saved["recommendation"]["spec"] in {p["spec"] for p in saved["predictions"]}
    assert {"nu", "hill", "phases", "omegas", "curvature"} <= set(saved["measurement"])
    assert saved["assumptions"] and saved["command"]["batch"] == 16
    assert (out / "advise.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, name", [
    (["--batch", "0"], "batch"), (["--model", "banana"], "model"),
    (["--data", "banana"], "data"), (["--bandwidth", "fast"], "bandwidth"),
    (["--agents", "0"], "agents"), (["--lr", "-1"], "lr"), (["--samples", "2"], "samples"),
    (["--inject", "student-t:nu=-1"], "nu"), (["--compressor", "sign"], "--compressor"),
    (["--device", "nope"], "device"), (["--threads", "0"], "threads"),
    (["--latency", "soon"], "latency"), (["--compute-time", "x"], "compute-time"),
])
def test_cli_bad_input_is_one_line(args, name, tmp_path, capsys):
    code = main([*FAST, "--out", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and name in err, err


@pytest.mark.slow
@pytest.mark.needs_data("fashion-mnist")
def test_cli_fashion_mnist_under_two_minutes(tmp_path):
    """The issue's acceptance run, in a fresh process with torch's default threads."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "compsde", "advise", "--model", "mlp",
                           "--data", "fashion-mnist", "--batch", "128", "--agents", "4",
                           "--lr", "0.05", "--bandwidth", "1gbit", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - started < 120
    assert "recommendation:" in done.stdout
    assert (tmp_path / "result.json").is_file() and (tmp_path / "advise.png").is_file()


def _drawn(advice, monkeypatch):
    """The figure ``plot`` draws (not saved)."""
    from compsde.advise import report

    seen = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: seen.append(fig) or path)
    monkeypatch.setattr(report.plt, "close", lambda fig: None)
    report.plot(advice, "unused.png")
    return seen[0]


@pytest.mark.parametrize("bandwidth", [None, 1e6])
def test_plot_draws_no_bars_on_log_axes(bandwidth, generator, monkeypatch):
    from matplotlib.patches import Rectangle

    _, m = measure_quadratic("gaussian:scale=1", generator, d=50,
                             compressors=("randk:ratio=0.02", "randk:ratio=0.5"))
    a = advise(m, lr=LR, agents=AGENTS, bandwidth=bandwidth, compute_seconds=1e-3)
    fig = _drawn(a, monkeypatch)
    logs = [ax for ax in fig.axes if ax.get_yscale() == "log" and ax.get_xscale() == "linear"]
    assert logs                                   # the loss panel spans decades here
    for ax in logs:
        assert not [p for p in ax.patches if isinstance(p, Rectangle)], ax.get_title()


def test_plot_does_not_promise_batches_to_methods_without_finite_variance(generator,
                                                                          monkeypatch):
    _, m = measure_quadratic("student-t:nu=1.5,scale=1", generator, d=50, samples=512)
    a = advise(m, lr=LR, agents=AGENTS)
    assert not a.by_spec("dsgd").finite and a.recommendation["spec"] == "dsignsgd"
    fig = _drawn(a, monkeypatch)
    legends = [t.get_text() for ax in fig.axes if ax.get_legend()
               for t in ax.get_legend().get_texts()]
    reference = next(t for t in legends if t.startswith("reference loss"))
    assert "bring the others down" not in reference and "infinite variance" in reference


def test_batch_law_sets_the_matched_batch(generator):
    """γ̂ in every batch rule (§5a): a loss factor F needs the batch ×F^{1/(2γ)}."""
    import dataclasses

    _, m = measure_quadratic("gaussian:scale=1", generator, d=50, samples=64)
    assert m.batch_law is not None and abs(m.batch_law.gamma - 0.5) <= 4 * m.batch_law.se
    slow = dataclasses.replace(m, batch_law=dataclasses.replace(m.batch_law, gamma=0.25))
    half, quarter = (advise(x, lr=LR, agents=AGENTS, batch=1) for x in (m, slow))
    for a, b in zip(half.predictions, quarter.predictions, strict=True):
        if a.match_factor is not None and a.match_factor > 1:
            assert b.match_batch == math.ceil(a.match_factor ** 2 - 1e-9)
            assert a.match_batch == math.ceil(a.match_factor - 1e-9)
    sign = quarter.by_spec("dsignsgd")
    assert sign.match_lr == pytest.approx(sign.lr * (1 / sign.match_batch) ** 0.25)


def test_flat_batch_law_recommends_what_still_works(generator):
    """γ̂ ≈ 0: no batch recovers a loss; DSignSGD is matched by agents, the others by lr."""
    import dataclasses

    _, m = measure_quadratic("gaussian:scale=1", generator, d=50, samples=64)
    flat = dataclasses.replace(m, batch_law=dataclasses.replace(m.batch_law, gamma=0.01))
    result = advise(flat, lr=LR, agents=AGENTS, batch=1)
    sign = result.by_spec("dsignsgd")
    assert sign.match_factor > 1 and sign.match_knob == "agents"
    assert sign.match_batch == 1 and sign.match_agents == math.ceil(AGENTS * sign.match_factor)
    knobs = {a["knob"]: a for a in sign.adjustments}
    assert knobs["batch"]["possible"] is False and "impossible" in knobs["batch"]["formula"]
    assert knobs["agents"]["possible"] and knobs["lr"]["possible"]
    dcsgd = result.by_spec("dcsgd:randk:ratio=0.25")
    if dcsgd.finite:
        knobs = {a["knob"]: a for a in dcsgd.adjustments}
        assert not knobs["batch"]["possible"] and not knobs["agents"]["possible"]
        assert dcsgd.match_knob == "lr" and dcsgd.match_lr == pytest.approx(
            LR / dcsgd.match_factor)
    text = table(result)
    assert "no batch recovers" in text and "γ̂ = 0.01" in text
    assert "compute ms" in text.splitlines()[next(
        i for i, line in enumerate(text.splitlines()) if line.startswith("method"))]


# -- advise --verify ----------------------------------------------------------------------------
VERIFY = ["advise", "--model", "mlp:hidden=32", "--data", "synthetic:n=4096,shape=1x8x8",
          "--batch", "16", "--samples", "64", "--warmup", "50", "--curvature-batch", "256",
          "--bandwidth", "1gbit", "--threads", "1"]


def _no_work(monkeypatch, target):
    def work(*args, **kwargs):
        raise AssertionError(f"{target} ran before the input was refused")
    monkeypatch.setattr(target, work)


@pytest.mark.parametrize("args, needle", [
    (["--verify", "0"], "--verify must be an integer in [20, 100000], got 0"),
    (["--verify", "50", "--samples", "32"], "--samples must be at least 64 with --verify"),
    (["--verify-method", "dsignsgd"], "--verify-method needs --verify"),
    (["--verify", "50", "--verify-method", "dcsgd:randk:k=3"], "--verify-method must be"),
])
def test_verify_bad_input_before_any_work(args, needle, monkeypatch, tmp_path, capsys):
    _no_work(monkeypatch, "compsde.cli.advise_cmd.measure_dataset")
    code = main([*VERIFY, "--out", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_verify_refuses_a_method_not_recommended_before_training(monkeypatch, tmp_path,
                                                                 capsys):
    """Cauchy noise injected: DCSGD has no stationary loss, the advice gives it no
    configuration, so it is not a recommended one."""
    _no_work(monkeypatch, "compsde.advise.verify.run_arm")
    code = main([*VERIFY, "--out", str(tmp_path), "--verify", "40",
                 "--inject", "student-t:nu=1,scale=0.1",
                 "--verify-method", "dcsgd:randk:ratio=0.01"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "'dcsgd:randk:ratio=0.01' was not recommended" in err


def test_verify_writes_a_verdict_per_recommendation(tmp_path, capsys):
    out = tmp_path / "v"
    code = main([*VERIFY, "--out", str(out), "--verify", "100", "--json"])
    saved = json.loads((out / "result.json").read_text())
    ver = saved["verify"]
    assert code == (0 if ver["verdict"] == "pass" else 1)
    assert [a["role"] for a in ver["arms"]] == ["baseline"] + ["recommended"] * (
        len(ver["arms"]) - 1)
    assert ver["bands"] and ver["steps"] == 100
    recs = ver["recommendations"]
    assert recs and all(r["verdict"] in ("pass", "fail") for r in recs)
    for r in recs:
        if r["claim"] is not None:
            assert r["claim"]["relation"] == "at_least"
            band = ver["bands"][r["spec"]]["claim"]["band"]
            # the tolerance is the one written before the run: k·se + budget + band
            assert r["claim"]["tolerance"] == pytest.approx(
                4 * r["claim"]["se"] + 0.25 + band)
            assert r["claim"]["verdict"] == "pass", r["claim"]   # the real rule holds here
    law = ver["batch_law_simulation"]
    assert law["law"]["verdict"] == law["rules"]["verdict"] == "pass"
    assert (out / "verify.png").stat().st_size > 10_000
    assert saved["recommendation"]["spec"] == recs[0]["spec"]


def test_cauchy_noise_shows_a_flat_batch_law(generator):
    """Measured on Cauchy noise: γ̂ ≈ 0 (the mean of B Cauchy draws has the scale of one)."""
    _, m = measure_quadratic("student-t:nu=1,scale=1", generator, d=200, samples=64)
    law = m.batch_law
    assert law is not None and abs(law.gamma) <= 4 * law.se
    assert law.alpha is not None and law.alpha < 2        # heavy tails: α from γ̂
    text = table(advise(m, lr=LR, agents=AGENTS))
    assert f"γ̂ = {law.gamma:.3g}" in text
    assert m.to_dict()["batch_law"]["gamma"] == law.gamma


def test_too_few_samples_state_the_gaussian_assumption(generator):
    _, m = measure_quadratic("gaussian:scale=1", generator, d=10, samples=32)
    assert m.batch_law is None and any("needs at least 64" in n for n in m.notes)
    result = advise(m, lr=LR, agents=AGENTS)
    assert any("assume the Gaussian γ = ½" in w for w in result.warnings)


def test_codec_parts_add_up_to_the_codec_time():
    from compsde.advise.codec_time import codec_parts, codec_seconds

    parts = codec_parts("dsignsgd", None, 4096, 4)
    assert set(parts) == {"encode", "reduce", "decode"} and all(v >= 0 for v in parts.values())
    assert parts["reduce"] < parts["encode"] + parts["decode"]   # bits all-gather at N = 4
    assert codec_seconds("dsignsgd", None, 4096, 4) > 0
    assert codec_parts("dsgd", None, 4096, 1) == {"encode": 0.0, "reduce": 0.0, "decode": 0.0}
