"""The advisor's codec term: it times the hooks' own codecs and enters the time per step."""

from __future__ import annotations

import time

import pytest
import torch

from compsde import compressors, landscapes, noise
from compsde.advise import advise, codec_time
from compsde.advise.codec_time import codec_seconds, method_spec
from compsde.diagnose import measure_landscape
from compsde.distributed import sign_codecs


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(codec_time, "_measured", {})


@pytest.mark.parametrize(("method", "comp"), [("dsgd", None), ("dsignsgd", None),
                                              ("dcsgd", "randk:ratio=0.01"),
                                              ("dcsgd", "natural")])
@pytest.mark.parametrize("agents", [2, 8])
def test_every_method_has_a_positive_time(method, comp, agents):
    compressor = None if comp is None else compressors.make(comp)
    seconds = codec_seconds(method, compressor, 20_000, agents, repeats=3)
    assert 0 < seconds < 1.0
    assert codec_seconds(method, compressor, 20_000, agents, repeats=3) == seconds  # cached
    assert codec_seconds(method, compressor, 20_000, 1) == 0.0


@pytest.mark.parametrize(("agents", "codec", "step"), [
    (2, sign_codecs.SignBitsCodec, "decode"), (8, sign_codecs.SignScatterCodec, "decode"),
    (8, sign_codecs.SignScatterCodec, "reduce"), (2, sign_codecs.SignBitsCodec, "encode")])
def test_the_time_covers_each_step_of_the_wire(monkeypatch, agents, codec, step):
    """A codec step made 20 ms slower shows up in the measurement: the term times the hook's
    own encode, the scatter's reduce and the decode."""
    real = getattr(codec, step)

    def slow(self, *args, **kwargs):
        time.sleep(0.02)
        return real(self, *args, **kwargs)

    fast = codec_seconds("dsignsgd", None, 4096, agents, repeats=3)
    monkeypatch.setattr(codec, step, slow)
    monkeypatch.setattr(codec_time, "_measured", {})
    assert codec_seconds("dsignsgd", None, 4096, agents, repeats=3) >= fast + 0.02


def test_method_spec_and_bad_input():
    assert method_spec("dcsgd", compressors.make("randk:ratio=0.1")) == "dcsgd:randk:ratio=0.1"
    assert method_spec("dsignsgd", None) == "dsignsgd"
    with pytest.raises(ValueError, match="compressor"):
        method_spec("dcsgd", None)
    with pytest.raises(ValueError, match="d"):
        codec_seconds("dsgd", None, 0, 2)


def test_codec_time_enters_the_time_per_step(generator):
    land = landscapes.make("quadratic:d=20,eig=0.5:2")
    m = measure_landscape(land, noise.make("student-t:nu=1.5,scale=0.3"),
                          x=torch.zeros(20, dtype=torch.float64), samples=128,
                          generator=generator, compressors=["randk:ratio=0.25"])
    kwargs = {"lr": 0.05, "agents": 4, "compute_seconds": 1e-3, "bandwidth": 1.25e8}
    plain = advise(m, **kwargs)
    assert plain.recommendation["spec"] == "dsignsgd"           # heavy tails: only sign
    assert all(p.codec_seconds is None for p in plain.predictions)
    slow = advise(m, **kwargs, codec_seconds={"dsignsgd": 0.5})
    sign = slow.by_spec("dsignsgd")
    assert sign.codec_seconds == 0.5
    assert sign.score == pytest.approx(plain.by_spec("dsignsgd").score + 0.5 / sign.speed)
    measured = advise(m, **kwargs, codec_seconds="measure")
    assert all(p.codec_seconds is not None and p.codec_seconds >= 0
               for p in measured.predictions)
    with pytest.raises(ValueError, match="codec_seconds"):
        advise(m, **kwargs, codec_seconds="guess")
