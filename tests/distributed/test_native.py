"""The compiled sign kernels against the torch code they replace: bitwise, on every path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compsde import methods
from compsde.compressors import native
from compsde.compressors.bits import pack_signs
from compsde.distributed import AgentSimulator
from compsde.distributed.wire import CountPlanes, count_bits

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HAS_COMPILER = native._compiler()[0] is not None         # $CC as native reads it, else cc


BUILDS = ["native", "avx2", "bytes"]


def _cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as file:
        return set(next((line for line in file if line.startswith("flags")), "").split())


def _use_build(which: str, monkeypatch, folder) -> None:
    """Load the kernels as built for this CPU, the same build without AVX-512 (its AVX2 paths)
    or without AVX2 (the byte loops), so that every path is tested on a machine that has
    AVX-512."""
    if which != "native":
        monkeypatch.setattr(native, "_FLAG_SETS", (native.BUILDS[which],))
        monkeypatch.setattr(native, "_state", {})
        monkeypatch.setenv("COMPSDE_CACHE_DIR", str(folder))
    if native.library() is None:
        pytest.skip(f"no compiled kernels: {native.status()['reason']}")
    status = native.status()
    assert which == "native" or not status["avx512"]
    assert which != "bytes" or not status["avx2"]


@pytest.fixture(params=BUILDS)
def build(request, monkeypatch, tmp_path_factory):
    """Each build of the kernels in turn."""
    _use_build(request.param, monkeypatch, tmp_path_factory.getbasetemp() / "kernels")
    return request.param


@pytest.fixture(params=[f"compiled-{which}" for which in BUILDS] + ["torch"])
def path(request, monkeypatch, tmp_path_factory):
    """Run a test with each build of the compiled kernels and with the torch fallback."""
    if request.param == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    else:
        which = request.param.removeprefix("compiled-")
        _use_build(which, monkeypatch, tmp_path_factory.getbasetemp() / "kernels")
    return request.param


def signed_grads(agents: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.randn(agents, d, generator=torch.Generator().manual_seed(seed)).to(dtype)
    g[:, : min(d, 2)] = 0.0
    g[0, -1] = -0.0
    return g


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (tells -0.0 from 0.0)."""
    return a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8),
                                              b.reshape(-1).view(torch.uint8))


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
def test_kernels_compile_where_a_compiler_exists():
    status = native.status()
    assert status["available"], status["reason"]


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
def test_the_native_build_uses_avx512_where_the_cpu_has_it():
    flags = _cpu_flags()
    has = {"avx512f", "avx512bw", "avx512dq"} <= flags
    assert native.status()["avx512"] == has
    assert native.status()["avx2"] == ("avx2" in flags and not has)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
@pytest.mark.skipif("avx2" not in _cpu_flags(), reason="the CPU has no AVX2")
@pytest.mark.parametrize("which", ["avx2", "bytes"])
def test_the_builds_without_avx512_take_their_own_paths(which):
    """-mno-avx512f leaves the AVX2 paths, -mno-avx2 the byte loops."""
    with native.using(which) as status:
        assert status["available"], status["reason"]
        assert native.BUILDS[which][-1] in status["reason"]
        assert not status["avx512"] and status["avx2"] == (which == "avx2")


@pytest.mark.parametrize("wire", ["bits", "scatter", "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("agents", "d"), [(2, 1), (2, 4099), (3, 17), (4, 800), (5, 1001),
                                           (8, 12345), (15, 333), (16, 257), (40, 999)])
def test_wires_are_bitwise_the_dsignsgd_direction(path, wire, dtype, agents, d):
    g = signed_grads(agents, d, dtype, seed=agents * d)
    sim = AgentSimulator("dsignsgd", agents, seed=3, sign_wire=wire)
    got = sim.reduce_bucket(g.clone(), bucket=0)
    want = methods.make("dsignsgd").direction(g.clone())
    assert got.dtype == dtype and same_bits(got, want)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 300), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**16))
def test_pack_matches_the_compressor_layout(build, n, dtype, seed):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    x[:: max(1, n // 3)] = torch.tensor([0.0, -0.0, float("nan"), float("inf")],
                                        dtype=dtype)[seed % 4]
    out = torch.full(((n + 7) // 8,), 0xAB, dtype=torch.uint8)
    finite = native.pack_signs_checked(x, out)
    if finite is None:
        assert not native.status()["native_arch"]
    else:
        assert torch.equal(out, pack_signs(x))
        assert finite == bool(torch.isfinite(x).all())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 255), nbytes=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_count_planes_counts_the_set_bits(build, rows, nbytes, seed):
    gen = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (rows, nbytes + 3), dtype=torch.uint8, generator=gen)
    view = packed[:, 1 : 1 + nbytes]                     # strided rows, as the wire's slices
    bits = count_bits(rows)
    out = torch.empty(bits, nbytes, dtype=torch.uint8)
    if not native.count_planes(view, bits, out):
        pytest.skip(native.status()["reason"])
    counts = np.unpackbits(view.numpy(), axis=1).astype(np.int64).sum(0)
    planes = (counts[None, :] >> np.arange(bits - 1, -1, -1)[:, None]) & 1
    assert np.array_equal(np.unpackbits(out.numpy(), axis=1), planes)


@pytest.mark.parametrize("world", [1, 2, 7, 8, 15, 16, 100, 255])
@pytest.mark.parametrize("dtype", DTYPES)
def test_planes_decode_to_the_mean(build, world, dtype):
    shard = 8 * 13
    planes = CountPlanes(shard, world, torch.device("cpu"))
    counts = torch.randint(0, world + 1, (shard,), generator=torch.Generator().manual_seed(world))
    counts[:2] = torch.tensor([0, world])
    message = planes.pack(counts, torch.empty(planes.nbytes, dtype=torch.uint8))
    out = torch.empty(shard - 5, dtype=dtype)                 # a shorter last shard
    if not native.mean_from_planes(message.view(count_bits(world), -1), world, out):
        pytest.skip(native.status()["reason"])
    want = counts[: shard - 5].to(dtype).mul_(2.0 / world).sub_(1.0)
    assert same_bits(out, want)


@pytest.mark.parametrize("offset", [0, 1, 3, 4, 8])
@pytest.mark.parametrize("world", [2, 3, 8])
def test_decoding_into_unaligned_memory(build, offset, world):
    """Shards of a bucket start anywhere: the decoders write the same values at any address."""
    n = 8 * 37 + 5
    gen = torch.Generator().manual_seed(world + offset)
    rows = torch.randint(0, 256, (world, (n + 7) // 8), dtype=torch.uint8, generator=gen)
    counts = torch.from_numpy(np.unpackbits(rows.numpy(), axis=1)[:, :n].sum(0))
    want = counts.to(torch.float32).mul_(2.0 / world).sub_(1.0)
    out = torch.full((n + offset,), 7.0)[offset:]
    # the byte loops' streaming stores need 16-byte alignment (else the caller falls back)
    status = native.status()
    runs = status["avx512"] or status["avx2"] or out.data_ptr() % 16 == 0
    assert native.mean_from_rows(rows, world, out) == runs
    assert not runs or same_bits(out, want)
    padded = torch.zeros(8 * rows.shape[1], dtype=torch.int64)
    padded[:n] = counts
    planes = CountPlanes(padded.numel(), world, torch.device("cpu"))
    message = planes.pack(padded, torch.empty(planes.nbytes, dtype=torch.uint8))
    out.fill_(7.0)
    assert native.mean_from_planes(message.view(count_bits(world), -1), world, out) == runs
    assert not runs or same_bits(out, want)


def test_unsupported_inputs_fall_back():
    rows = torch.zeros(16, 4, dtype=torch.uint8)                # 16 rows need 5 bits > 4
    assert not native.mean_from_rows(rows, 16, torch.empty(32))
    assert not native.mean_from_rows(torch.zeros(2, 4, dtype=torch.uint8), 2,
                                     torch.empty(32, dtype=torch.int32))
    assert not native.count_planes(rows, 2, torch.empty(2, 4, dtype=torch.uint8))


def _status_in_subprocess(tmp_path, **env) -> dict:
    code = "from compsde.compressors import native; import json; print(json.dumps(native.status()))"
    environ = {**os.environ, "COMPSDE_CACHE_DIR": str(tmp_path), **env}
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                          text=True, check=True, timeout=120)
    import json

    return json.loads(done.stdout)


def test_disabled_by_environment(tmp_path):
    status = _status_in_subprocess(tmp_path, COMPSDE_NATIVE="0")
    assert not status["available"] and "COMPSDE_NATIVE=0" in status["reason"]


def test_a_failing_compiler_leaves_the_torch_path(tmp_path):
    status = _status_in_subprocess(tmp_path, CC="false")
    assert not status["available"] and "failed" in status["reason"]
    assert not list(tmp_path.glob("*.so"))
