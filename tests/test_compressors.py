"""Compressors: moments against THEORY.md §1, wire formats, sampling, validation.

Statistical checks use fixed seeds and CLT tolerances: an estimate passes when it lies within
5 standard errors (estimated from the same samples) of the exact value.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compsde import compressors
from compsde.compressors import WireMessage, bits, make, sample_without_replacement, sampling

Z = 5.0  # standard errors allowed
N = 20_000  # Monte-Carlo samples per moment check

UNBIASED = ["identity", "randk:k=1", "randk:ratio=0.5", "bernoulli:p=0.3", "qsgd:levels=1",
            "qsgd:levels=3", "natural"]
TIGHT = ["identity", "randk:k=1", "randk:ratio=0.5", "bernoulli:p=0.3"]
BIASED = ["topk:k=1", "topk:ratio=0.3", "sign", "scaledsign"]
ALL = UNBIASED + BIASED
# Specs valid for every d >= 1 (no fixed k).
ANY_D = ["identity", "randk:ratio=0.3", "randk:k=1", "bernoulli:p=0.3", "qsgd:levels=1",
         "qsgd:levels=5", "natural", "topk:ratio=0.3", "topk:k=1", "sign", "scaledsign"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def vector(d: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Entries of both signs spread over several binades, one exact zero when d > 2.

    Entries are float32 numbers, so a one-entry vector's norm is exact on QSGD's float32 wire.
    """
    g = gen(seed)
    x = torch.randn(d, generator=g) * torch.exp(torch.randn(d, generator=g))
    if d > 2:
        x[1] = 0.0
    return x.to(dtype)


def samples(spec: str, x: torch.Tensor, n: int = N, seed: int = 0) -> torch.Tensor:
    """n independent draws of C(x) from one batched call, shape (n, d)."""
    return make(spec)(x.expand(n, -1).contiguous(), gen(seed))


def within(estimate: torch.Tensor, se: torch.Tensor, exact: torch.Tensor) -> bool:
    return bool(((estimate - exact).abs() <= Z * se + 1e-12 * (1 + exact.abs())).all())


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-12) -> bool:
    """Equal up to rounding (torch.testing's first call costs seconds of imports)."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


def mean_se(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return values.mean(0), values.std(0) / math.sqrt(values.shape[0])


# -- moments ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", UNBIASED)
@pytest.mark.parametrize("d", [1, 5, 12])
def test_unbiased_compressors_are_unbiased(spec, d):
    x = vector(d, seed=d)
    mean, se = mean_se(samples(spec, x))
    assert within(mean, se, x)


@pytest.mark.parametrize("spec", UNBIASED)
@pytest.mark.parametrize("d, seed", [(1, 0), (6, 1), (12, 2)])
def test_variance_equals_trace_of_covariance_and_respects_omega(spec, d, seed):
    comp = make(spec)
    x = vector(d, seed)
    err = ((samples(spec, x, seed=seed) - x) ** 2).sum(-1)
    mean, se = mean_se(err)
    trace = comp.covariance(x).diagonal().sum()
    assert within(mean, se, trace)
    bound = comp.omega(d) * float((x**2).sum())
    if spec in TIGHT:
        assert trace == pytest.approx(bound, rel=1e-12, abs=1e-300)
        assert within(mean, se, torch.tensor(bound, dtype=x.dtype))
    else:
        assert float(trace) <= bound * (1 + 1e-6)
        assert float(mean) <= bound + Z * float(se)


@pytest.mark.parametrize("spec", UNBIASED)
def test_covariance_matches_monte_carlo(spec):
    x = vector(5, seed=7)
    dev = samples(spec, x, seed=3) - x
    products = dev.unsqueeze(-1) * dev.unsqueeze(-2)
    mean, se = mean_se(products)
    assert within(mean, se, make(spec).covariance(x))


# Rows whose Euclidean norm (23, 8.25, 2.75) is exact in float32, as QSGD's wire norm.
PYTHAGOREAN = torch.tensor([[1.0, -2, 3, 5, -7, 21], [-1, 1, 2, -3, 5, 9], [1, 3, -4, 5, 6, -43]],
                           dtype=torch.float64) * torch.tensor([[1.0], [0.75], [1 / 16]],
                                                               dtype=torch.float64)


def theory_covariance(spec: str, g: torch.Tensor) -> torch.Tensor:
    """Φ(g) written out from the table of THEORY.md §1, independently of the library."""
    comp = make(spec)
    d = g.shape[-1]
    outer = g.unsqueeze(-1) * g.unsqueeze(-2)
    if comp.name == "identity":
        return torch.zeros_like(outer)
    if comp.name == "randk":
        k = comp.k_for(d)
        off = outer - torch.diag_embed(g**2)
        return (d / k - 1) * torch.diag_embed(g**2) - (d - k) / (k * (d - 1)) * off
    if comp.name == "bernoulli":
        return (1 / comp.p - 1) * torch.diag_embed(g**2)
    if comp.name == "qsgd":
        norm = g.norm(dim=-1, keepdim=True)
        r = comp.levels * g.abs() / norm
        frac = r - r.floor()
        return torch.diag_embed((norm / comp.levels) ** 2 * frac * (1 - frac))
    assert comp.name == "natural"
    low = torch.tensor([2.0 ** math.floor(math.log2(abs(v))) if v else 0.0
                        for v in g.reshape(-1).tolist()], dtype=g.dtype).view(g.shape)
    return torch.diag_embed((2 * low - g.abs()) * (g.abs() - low))


@pytest.mark.parametrize("spec", UNBIASED)
def test_covariance_and_diag_rank_one_follow_the_theory_table(spec):
    comp = make(spec)
    g = PYTHAGOREAN
    phi = comp.covariance(g)
    assert phi.shape == (3, 6, 6)
    assert close(phi, theory_covariance(spec, g), rtol=1e-12)
    diag, c = comp.covariance_diag_rank_one(g)
    rebuilt = torch.diag_embed(diag) + c.reshape(*c.shape, 1, 1) * g.unsqueeze(-1) * g.unsqueeze(-2)
    assert close(rebuilt, phi)
    if comp.name == "randk":
        k = comp.k_for(6)
        assert float(c) == pytest.approx(-(6 - k) / (k * 5))
    else:
        assert float(c) == 0.0


@pytest.mark.parametrize("spec", BIASED)
def test_biased_compressors_have_no_omega_or_covariance(spec):
    comp = make(spec)
    assert not comp.unbiased and comp.omega(10) is None
    with pytest.raises(NotImplementedError):
        comp.covariance(torch.ones(3))


def test_omega_values():
    assert make("identity").omega(7) == 0.0
    assert make("randk:k=10").omega(100) == pytest.approx(9.0)
    assert make("randk:ratio=0.1").omega(1000) == pytest.approx(9.0)
    assert make("bernoulli:p=0.2").omega(5) == pytest.approx(4.0)
    assert make("qsgd:levels=4").omega(100) == pytest.approx(min(100 / 16, 10 / 4))
    assert make("qsgd:levels=1").omega(4) == pytest.approx(2.0)
    assert make("natural").omega(3) == 0.125


def test_natural_omega_is_attained_at_four_thirds_of_a_power_of_two():
    x = torch.tensor([4 / 3, -8 / 3, 2.0 ** -5 * 4 / 3], dtype=torch.float64)
    trace = make("natural").covariance(x).diagonal().sum()
    assert float(trace) == pytest.approx(0.125 * float((x**2).sum()), rel=1e-12)


# -- batches and independence ---------------------------------------------------------------
@pytest.mark.parametrize("spec", ["randk:k=2", "bernoulli:p=0.3", "qsgd:levels=2", "natural"])
def test_batched_rows_are_independent(spec):
    x = vector(5, seed=11)
    out = make(spec)(x.expand(N // 2, 2, -1).contiguous(), gen(4)) - x
    cross = out[:, 0].unsqueeze(-1) * out[:, 1].unsqueeze(-2)
    mean, se = mean_se(cross)
    assert within(mean, se, torch.zeros_like(mean))
    assert not torch.equal(out[:, 0], out[:, 1])


def test_batched_rand_k_fallback_rows_are_unbiased_and_independent(monkeypatch):
    # With exactly k draws per row, every row with a repeat falls back to the 1-D sampler.
    monkeypatch.setattr(sampling, "_draw_count", lambda mean, k: k)
    x = vector(5, seed=12)
    out = make("randk:k=2")(x.expand(N // 2, 2, -1).contiguous(), gen(5)) - x
    mean, se = mean_se(out.reshape(-1, 5))
    assert within(mean, se, torch.zeros_like(mean))
    cross = out[:, 0].unsqueeze(-1) * out[:, 1].unsqueeze(-2)
    mean, se = mean_se(cross)
    assert within(mean, se, torch.zeros_like(mean))


@pytest.mark.parametrize("spec", ALL)
def test_batched_call_keeps_shape_dtype_and_a_row_equals_the_single_vector(spec):
    comp = make(spec)
    x = vector(7, seed=2, dtype=torch.float32)
    batch = x.expand(2, 3, -1).contiguous()
    out = comp(batch, gen(0))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    # a (1, d) batch consumes randomness exactly like the vector itself
    assert torch.equal(comp(x.unsqueeze(0), gen(9))[0], comp(x, gen(9)))
    assert comp(x[:0].reshape(0, 7), gen(0)).shape == (0, 7)


# -- Rand-k sampling --------------------------------------------------------------------------
def subset_frequencies(draws: list[tuple[int, ...]], d: int, k: int) -> tuple[np.ndarray, float]:
    subsets = {s: i for i, s in enumerate(combinations(range(d), k))}
    counts = np.zeros(len(subsets))
    for s in draws:
        counts[subsets[s]] += 1
    return counts / len(draws), 1 / len(subsets)


def assert_uniform_subsets(draws: list[tuple[int, ...]], d: int, k: int) -> None:
    freq, p = subset_frequencies(draws, d, k)
    se = math.sqrt(p * (1 - p) / len(draws))
    assert np.all(np.abs(freq - p) <= Z * se), freq


@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("d, k", [(5, 2), (6, 4)])
def test_batched_rand_k_picks_every_k_subset_uniformly(fallback, d, k, monkeypatch):
    if fallback:  # about a fifth to a half of the rows take the fallback
        monkeypatch.setattr(sampling, "_draw_count", lambda mean, k: k)
    index = make(f"randk:k={k}").indices(d, gen(1), rows=N)
    assert index.shape == (N, k)
    assert_uniform_subsets([tuple(r) for r in index.tolist()], d, k)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("d, k", [(5, 2), (6, 4)])
def test_single_vector_sampler_picks_every_k_subset_uniformly(backend, d, k):
    g = gen(2)
    if backend == "numpy":
        draws = [tuple(sample_without_replacement(d, k, g).tolist()) for _ in range(4000)]
    else:
        draws = [tuple(sampling._torch_sample(d, k, g, torch.device("cpu")).tolist())
                 for _ in range(4000)]
    assert_uniform_subsets(draws, d, k)


def inclusion_checks(draws: torch.Tensor, d: int, k: int) -> None:
    """Per-coordinate and pair inclusion frequencies, and the hypergeometric block count."""
    n = draws.shape[0]
    hits = torch.zeros(n, d, dtype=torch.float64).scatter_(1, draws, 1.0)
    p = k / d
    freq = hits.mean(0)
    assert within(freq, torch.full_like(freq, math.sqrt(p * (1 - p) / n)), torch.full_like(freq, p))
    pair_p = k * (k - 1) / (d * (d - 1))
    for i, j in [(0, 1), (0, d - 1), (d // 2, d // 2 + 1), (3, d - 5)]:
        both = (hits[:, i] * hits[:, j]).mean()
        assert abs(float(both) - pair_p) <= Z * math.sqrt(pair_p * (1 - pair_p) / n)
    block = d // 3  # kept count in a block is hypergeometric: its variance shows the negative
    count = hits[:, :block].sum(1)  # correlation of sampling without replacement
    var = block * p * (1 - p) * (d - block) / (d - 1)
    centred = (count - block * p) ** 2
    assert within(centred.mean(), centred.std() / math.sqrt(n), torch.tensor(var).double())


@pytest.mark.parametrize("backend", ["numpy", "torch", "rows"])
@pytest.mark.parametrize("d, k", [(3000, 300), (2000, 1800)])
def test_large_d_sampler_inclusion_frequencies(backend, d, k):
    g = gen(3)
    if backend == "rows":
        draws = list(compressors.sample_rows_without_replacement(1500, d, k, g))
    elif backend == "numpy":
        draws = [sample_without_replacement(d, k, g) for _ in range(1500)]
    else:
        draws = [sampling._torch_sample(d, k, g, torch.device("cpu")) for _ in range(1500)]
    inclusion_checks(torch.stack(draws), d, k)


@pytest.mark.parametrize("d, k", [(16, 5), (40, 1), (12, 9)])
def test_small_d_row_sampler_inclusion_frequencies(d, k):
    """The small-d paths of the batched sampler (ranked uniform keys; k = 1: one integer)."""
    rows = compressors.sample_rows_without_replacement(3000, d, k, gen(6))
    assert rows.shape == (3000, k) and rows.dtype == torch.int64
    assert bool((rows[:, 1:] > rows[:, :-1]).all()) and 0 <= int(rows.min()) <= int(rows.max()) < d
    inclusion_checks(rows, d, k)


def test_first_distinct_selection_numpy_and_torch_agree_with_the_definition():
    draws = np.random.Generator(np.random.PCG64(0)).integers(0, 30, (300, 40))
    keep, distinct = sampling._np_first_distinct(draws, 20)
    keep_t, distinct_t = sampling._torch_first_distinct(torch.from_numpy(draws), 20)
    assert np.array_equal(keep, keep_t.numpy()) and np.array_equal(distinct, distinct_t.numpy())
    for row, mask, count in zip(draws, keep, distinct, strict=True):
        seen: list[int] = []
        expected = np.zeros(40, dtype=bool)
        for position, value in enumerate(row.tolist()):
            if value not in seen:
                seen.append(value)
                expected[position] = len(seen) <= 20
        assert np.array_equal(mask, expected) and count == len(seen)


def test_sampler_top_up_path_stays_uniform(monkeypatch):
    monkeypatch.setattr(sampling, "_draw_count", lambda mean, k: k // 2)
    g = gen(4)
    draws = torch.stack([sample_without_replacement(3000, 300, g) for _ in range(1500)])
    inclusion_checks(draws, 3000, 300)
    draws = torch.stack([sampling._torch_sample(3000, 300, g, torch.device("cpu"))
                         for _ in range(200)])
    assert all(len(set(r.tolist())) == 300 for r in draws)


def test_large_sample_is_sorted_distinct_and_in_range():
    for d, k in [(10**6, 10**4), (10**6, 9 * 10**5), (2**31 + 10, 5)]:
        idx = sample_without_replacement(d, k, gen(5))
        assert idx.dtype == torch.int64 and idx.shape == (k,)
        assert bool((idx[1:] > idx[:-1]).all()) and int(idx[0]) >= 0 and int(idx[-1]) < d
        rows = compressors.sample_rows_without_replacement(3, d, min(k, 10**4), gen(5))
        assert rows.dtype == torch.int64 and rows.shape == (3, min(k, 10**4))
        assert bool((rows[:, 1:] > rows[:, :-1]).all()) and int(rows.max()) < d
    assert torch.equal(sample_without_replacement(7, 7, gen(0)), torch.arange(7))
    full = compressors.sample_rows_without_replacement(2, 3, 3)
    assert torch.equal(full, torch.arange(3).expand(2, 3))
    assert compressors.sample_rows_without_replacement(0, 9, 4).shape == (0, 4)


def test_rand_k_indices_resolve_ratio_and_match_the_call():
    comp = make("randk:ratio=0.01")
    assert comp.k_for(1000) == 10 and comp.k_for(10) == 1 and comp.k_for(149) == 1
    assert make("randk:ratio=1").k_for(33) == 33
    x = torch.randn(1000, generator=gen(0))
    idx = comp.indices(1000, gen(6))
    out = comp(x, gen(6))
    assert torch.equal(out.nonzero().squeeze(1), idx)
    assert torch.equal(out[idx], x[idx] * 100)
    assert comp.scale(1000) == 100.0


# -- wire --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ANY_D)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d", [1, 7, 8, 33, 1000])
def test_decode_of_encode_equals_call_and_consumes_the_same_randomness(spec, dtype, d):
    comp = make(spec)
    x = vector(d, seed=d, dtype=dtype)
    g1, g2, g3 = gen(42), gen(42), gen(42)
    message = comp.encode(x, g1)
    decoded = comp.decode(message, g2)
    called = comp(x, g3)
    assert decoded.dtype == dtype and decoded.shape == (d,)
    assert torch.equal(decoded, called)
    assert torch.equal(g1.get_state(), g3.get_state())
    if comp.name in ("randk", "bernoulli"):
        assert torch.equal(g2.get_state(), g3.get_state())
    out = torch.full((d,), 7.0, dtype=dtype)
    assert comp.decode(message, gen(42), out=out) is out
    assert torch.equal(out, called)
    if comp.name != "bernoulli":
        assert message.bits == comp.wire_bits(d, dtype)


@pytest.mark.parametrize("d", [1, 5, 7, 8, 9, 31, 32, 33, 1000, 1001])
def test_wire_bits_are_exact_and_as_documented(d):
    assert make("identity").wire_bits(d) == 32 * d
    assert make("identity").wire_bits(d, torch.float64) == 64 * d
    assert make("randk:ratio=0.1").wire_bits(d) == 32 * max(1, round(0.1 * d))
    assert make("topk:k=1").wire_bits(d, torch.float16) == 32 + 16
    assert make("sign").wire_bits(d) == 8 * math.ceil(d / 8)
    assert make("scaledsign").wire_bits(d) == 32 + 8 * math.ceil(d / 8)
    assert make("qsgd:levels=4").wire_bits(d) == 32 + 8 * math.ceil(d * 4 / 8)  # 1 + 3 bits
    assert make("qsgd:levels=1").wire_bits(d) == 32 + 8 * math.ceil(d * 2 / 8)
    assert make("natural").wire_bits(d) == 8 * math.ceil(d * 9 / 8)
    assert make("natural").wire_bits(d, torch.float64) == 8 * math.ceil(d * 12 / 8)
    for spec in ANY_D:
        if spec != "bernoulli:p=0.3":
            x = torch.randn(d, generator=gen(d))
            assert make(spec).encode(x, gen(0)).bits == make(spec).wire_bits(d)


def test_bernoulli_wire_bits_is_the_expected_size():
    comp = make("bernoulli:p=0.25")
    x = torch.randn(1000, generator=gen(0))
    sizes = torch.tensor([float(comp.encode(x, gen(s)).bits) for s in range(300)])
    mean, se = mean_se(sizes)
    assert comp.wire_bits(1000) == 250 * 32
    assert within(mean, se, torch.tensor(250.0 * 32))


def test_thirty_two_signs_pack_into_four_bytes_msb_first():
    x = -torch.ones(32)
    x[0] = 0.0  # sign(0) = +1
    x[15] = 2.0
    message = make("sign").encode(x)
    assert message.payload.dtype == torch.uint8 and message.payload.numel() == 4
    assert message.payload.tolist() == [0b10000000, 0b00000001, 0, 0]
    assert message.bits == 32
    assert make("sign")(x)[0] == 1.0 and make("sign")(torch.tensor([-0.0]))[0] == 1.0


def test_values_of_the_deterministic_compressors():
    x = torch.tensor([0.5, -3.0, 0.0, 2.0, -1.0])
    assert make("sign")(x).tolist() == [1, -1, 1, 1, -1]
    assert make("scaledsign")(x).tolist() == pytest.approx([1.3, -1.3, 1.3, 1.3, -1.3])
    assert make("topk:k=2")(x).tolist() == [0, -3, 0, 2, 0]
    assert make("topk:ratio=0.2")(torch.stack([x, -x])).tolist() == [[0, -3, 0, 0, 0],
                                                                     [0, 3, 0, 0, 0]]


def test_quantizer_outputs_lie_on_their_grids():
    x = PYTHAGOREAN[0]
    q = make("qsgd:levels=3")(x.expand(20, -1).contiguous(), gen(0))
    steps = q / (23 / 3)
    assert close(steps, steps.round())
    assert bool((steps.abs() <= 3).all()) and bool((q * x >= 0).all())
    x = vector(50, seed=3)
    nat = make("natural")(x.expand(20, -1).contiguous(), gen(0))
    nonzero = nat[nat != 0].abs()
    assert torch.equal(nonzero, 2.0 ** nonzero.log2().round())
    assert bool((nat[:, 1] == 0).all()) and bool((nat * x >= 0).all())
    assert torch.equal(make("qsgd:levels=2")(torch.zeros(3, 4)), torch.zeros(3, 4))


def test_natural_edge_of_the_range():
    tiny = torch.full((4000,), 2.0**-130)  # subnormal in float32: rounds to 0 or 2^-126
    out = make("natural")(tiny, gen(0))
    assert set(out.unique().tolist()) == {0.0, 2.0**-126}
    assert abs(float(out.double().mean()) / 2.0**-130 - 1) <= Z * math.sqrt(15) / math.sqrt(4000)
    big = torch.tensor([2.0**127 * 1.5])
    assert set(make("natural")(big.expand(64, 1).contiguous(), gen(0)).view(-1).tolist()) == {
        2.0**127, math.inf}


@pytest.mark.parametrize("spec", ALL)
def test_spec_round_trip_and_equality(spec):
    comp = make(spec)
    assert comp.spec == spec and make(comp.spec) == comp and hash(make(spec)) == hash(comp)
    assert make(comp) is comp and spec in repr(comp)
    assert isinstance(comp, compressors.Compressor)


def test_registry_lists_every_compressor():
    assert compressors.available() == sorted(["identity", "randk", "bernoulli", "qsgd", "natural",
                                              "topk", "sign", "scaledsign"])
    assert make("RandK: ratio = 0.1").spec == "randk:ratio=0.1"


# -- bits ------------------------------------------------------------------------------------
@given(st.lists(st.booleans(), max_size=100))
@settings(max_examples=60, deadline=None)
def test_pack_bits_round_trip(values):
    flags = torch.tensor(values, dtype=torch.bool)
    packed = bits.pack_bits(flags)
    assert packed.numel() == bits.packed_nbytes(len(values))
    assert torch.equal(bits.unpack_bits(packed, len(values)), flags)
    assert torch.equal(bits._pack_bits_torch(flags), packed)  # the device path agrees
    assert torch.equal(bits._unpack_bits_torch(packed, len(values)), flags)
    assert packed.tolist() == np.packbits(np.array(values, dtype=bool)).tolist()


@given(st.integers(1, 20), st.data())
@settings(max_examples=60, deadline=None)
def test_pack_codes_round_trip(width, data):
    codes = data.draw(st.lists(st.integers(0, 2**width - 1), max_size=40))
    packed = bits.pack_codes(torch.tensor(codes, dtype=torch.int64), width)
    assert packed.numel() == math.ceil(len(codes) * width / 8)
    assert bits.unpack_codes(packed, len(codes), width).tolist() == codes


@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=70),
       st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
@settings(max_examples=80, deadline=None)
def test_sign_wire_round_trip(values, dtype):
    x = torch.tensor(values, dtype=torch.float32).to(dtype)
    expected = torch.where(x >= 0, 1.0, -1.0).to(dtype)
    for spec in ("sign", "topk:ratio=0.5"):
        comp = make(spec)
        assert torch.equal(comp.decode(comp.encode(x)), comp(x))
    assert torch.equal(make("sign")(x), expected)
    packed = bits.pack_signs(x)
    assert torch.equal(bits.unpack_signs(packed, x.numel(), dtype), expected)


def test_unpack_signs_into_a_misaligned_view():
    x = torch.randn(21, generator=gen(0))
    bucket = torch.zeros(22)
    out = bucket[1:]  # 4-byte offset: not 8-byte aligned
    bits.unpack_signs(bits.pack_signs(x), 21, torch.float32, out=out)
    assert torch.equal(out, make("sign")(x)) and bucket[0] == 0


@given(st.integers(1, 5000), st.data())
@settings(max_examples=60, deadline=None)
def test_sampler_returns_k_sorted_distinct_indices(d, data):
    k = data.draw(st.integers(1, d))
    seed = data.draw(st.integers(0, 2**32))
    for idx in (sample_without_replacement(d, k, gen(seed)),
                sampling._torch_sample(d, k, gen(seed), torch.device("cpu"))):
        assert idx.shape == (k,) and bool((idx[1:] > idx[:-1]).all())
        assert int(idx[0]) >= 0 and int(idx[-1]) < d


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, match", [
    ("randk", "k or ratio"),
    ("randk:k=0", "k must be"),
    ("randk:k=-3", "k must be"),
    ("randk:k=2.5", "k must be"),
    ("randk:ratio=0", "ratio must be"),
    ("randk:ratio=1.5", "ratio must be"),
    ("randk:ratio=nan", "ratio must be"),
    ("randk:k=2,ratio=0.1", "k and ratio"),
    ("topk:k=0", "k must be"),
    ("topk:ratio=2", "ratio must be"),
    ("bernoulli", "needs p"),
    ("bernoulli:p=0", "p must be"),
    ("bernoulli:p=1.01", "p must be"),
    ("qsgd", "needs levels"),
    ("qsgd:levels=0", "levels must be"),
    ("qsgd:levels=x", "levels must be"),
    ("gzip", "compressor must be one of"),
    ("", "non-empty"),
    ("randk:ratio", "malformed"),
    ("randk:ratio=0.1,ratio=0.2", "repeats"),
    ("randk:q=1", "does not take q"),
    ("sign:k=1", "does not take k"),
    ("natural:bits=4", "does not take bits"),
])
def test_bad_specs_raise_value_error_naming_the_parameter(spec, match):
    with pytest.raises(ValueError, match=match):
        make(spec)


def test_k_larger_than_d_is_rejected_everywhere():
    for spec in ("randk:k=10", "topk:k=10"):
        comp = make(spec)
        for call in (lambda c=comp: c(torch.randn(5)), lambda c=comp: c.wire_bits(5),
                     lambda c=comp: c.encode(torch.randn(5)), lambda c=comp: c.k_for(5)):
            with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
                call()
    with pytest.raises(ValueError, match="k must be"):
        make("randk:k=10").omega(5)
    with pytest.raises(ValueError, match="k must be"):
        sample_without_replacement(5, 6)


@pytest.mark.parametrize("spec", ANY_D)
def test_decode_rejects_a_payload_of_the_wrong_size(spec):
    comp = make(spec)
    message = comp.encode(torch.randn(40, generator=gen(0)), gen(1))
    short = WireMessage(message.payload[:-1].clone(), message.d, message.dtype)
    with pytest.raises(ValueError, match="payload"):
        comp.decode(short, gen(1))
    longer = WireMessage(torch.cat([message.payload, message.payload[:1]]), 40, message.dtype)
    with pytest.raises(ValueError, match="payload"):
        comp.decode(longer, gen(1))
    wrong_type = WireMessage(message.payload.to(torch.int16), 40, message.dtype)
    with pytest.raises(ValueError, match="payload"):
        comp.decode(wrong_type, gen(1))
    with pytest.raises(ValueError, match="out"):
        comp.decode(message, gen(1), out=torch.empty(39))
    with pytest.raises(ValueError, match="message"):
        comp.decode(message.payload)


@pytest.mark.parametrize("bad, match", [
    (np.ones(3), "x must be a torch.Tensor"),
    (torch.ones(3, dtype=torch.int64), "floating"),
    (torch.tensor(1.0), "shape"),
    (torch.ones(3, 0), "shape"),
])
def test_bad_inputs_raise_value_error(bad, match):
    for spec in ("sign", "randk:k=1", "qsgd:levels=2"):
        with pytest.raises(ValueError, match=match):
            make(spec)(bad)
    with pytest.raises(ValueError, match="x must be a 1-D"):
        make("sign").encode(torch.ones(2, 3))
    with pytest.raises(ValueError, match="g must"):
        make("randk:k=1").covariance(torch.ones(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="d must be"):
        make("natural").omega(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", ANY_D)
def test_cuda_decode_of_encode_equals_call(spec):
    comp = make(spec)
    x = vector(1001, seed=0, dtype=torch.float32).cuda()
    g = [torch.Generator(device="cuda").manual_seed(3) for _ in range(3)]
    called = comp(x, g[2])
    assert called.device == x.device
    assert torch.equal(comp.decode(comp.encode(x, g[0]), g[1]), called)
    batch = comp(x.expand(300, -1).contiguous(), g[0])
    assert batch.shape == (300, 1001) and batch.device == x.device
