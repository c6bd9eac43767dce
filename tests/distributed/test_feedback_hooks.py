"""Scaled sign, EF-signSGD and EF21 (THEORY.md §8b) through the DDP hook, FSDP2's
reduce-scatter and HSDP on 1–3 gloo ranks, against the update rules written out here and
against AgentSimulator (tests/distributed/feedback_worker.py, one launch per world size).

The DDP model spans several buckets that DDP rebuilds after the first step, so the state
buffers are carried over parameter by parameter and each bucket's scale ``‖p‖₁/d`` changes
with its layout; the rules below follow the recorded layouts. Deterministic methods (scaled
sign, EF-signSGD, EF21 with Top-k or scaled sign) must match the rule bitwise; the random
compressors match AgentSimulator bitwise where the sum is order-free (N = 2, or all-gathered
messages decoded in rank order) and to rounding otherwise.
"""

from __future__ import annotations

import io
import math
import pickle
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ddp_cases import LR, SHAPES, STEPS, rank_grads, replay  # noqa: E402
from ddp_spawn import rank_records  # noqa: E402
from feedback_worker import FSDP_LAYOUTS, FSDP_SPECS, HSDP_SPECS, RESUME_SPECS, ddp_cases  # noqa: E402
from fsdp_layouts import UNITS, LayoutModel, grads_for, sgd_from_rows  # noqa: E402

from compsde import compressors  # noqa: E402
from compsde.distributed import AgentSimulator  # noqa: E402
from compsde.distributed.codecs import BucketKey  # noqa: E402
from compsde.distributed.fsdp import fsdp_flat  # noqa: E402
from compsde.distributed.protocol import Protocol  # noqa: E402
from compsde.distributed.wire import all_gather_bytes, allreduce_bytes  # noqa: E402

NAMES = [f"weights.{i}" for i in range(len(SHAPES))]
SIZES = {n: math.prod(s) for n, s in zip(NAMES, SHAPES, strict=True)}
DETERMINISTIC = {"scaledsign", "ef-signsgd", "ef-signsgd-noise", "ef21-topk", "ef21-scaledsign"}
GATHERED = {"ef21-randk-independent", "ef21-qsgd", "ef21-natural"}     # decoded in rank order


pytestmark = pytest.mark.filterwarnings("ignore::compsde.compressors.sparse.CompressionWarning")


@pytest.fixture(scope="module", params=(1, 2, 3), ids=lambda w: f"world{w}")
def launched(request, tmp_path_factory):
    world = request.param
    out = tmp_path_factory.mktemp(f"feedback{world}")
    return world, rank_records(HERE / "feedback_worker.py", world, out, timeout=240)


class Rule:
    """The update rules of THEORY.md §8b on flat buckets, written out: per-rank buffers and
    EF21's ĥ are kept per parameter name, so they follow the buckets' layout.

    - scaledsign: Δ_i = (‖g_i‖₁/d) sign(g_i); direction mean_i Δ_i
    - ef-signsgd: p_i = e_i + g_i, Δ_i = (‖p_i‖₁/d) sign(p_i), e_i ← p_i − Δ_i; mean_i Δ_i
    - ef21 (deterministic C): c_i = C(g_i − h_i), h_i ← h_i + c_i, ĥ ← ĥ + mean_i c_i; ĥ
    with sign(0) = +1, the scale rounded to float32, the mean summed in rank order.
    """

    def __init__(self, spec: str, world: int):
        self.spec, self.world = spec, world
        self.buffers: dict[tuple, torch.Tensor] = {}
        self.compressor = compressors.make(spec.split(":", 1)[1] if ":" in spec else "identity")

    @staticmethod
    def scaled_sign(x: torch.Tensor) -> torch.Tensor:
        scale = (torch.linalg.vector_norm(x, ord=1) / x.numel()).to(torch.float32)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype) * scale.to(x.dtype)

    def message(self, x: torch.Tensor) -> torch.Tensor:
        if self.compressor.name == "topk":
            k = self.compressor.k_for(x.numel())
            index = x.abs().topk(k).indices
            return torch.zeros_like(x).index_copy_(0, index, x[index])
        return self.scaled_sign(x)

    def held(self, who, parts: list[tuple[str, int]]) -> torch.Tensor:
        return torch.cat([self.buffers.get((who, n), torch.zeros(size)) for n, size in parts])

    def keep(self, who, parts: list[tuple[str, int]], value: torch.Tensor) -> None:
        offset = 0
        for name, size in parts:
            self.buffers[(who, name)] = value[offset:offset + size].clone()
            offset += size

    def bucket(self, grads: list[torch.Tensor], parts: list[tuple[str, int]]) -> torch.Tensor:
        """The direction of one bucket from the ranks' flat gradients ``grads``."""
        sent = []
        for rank, g in enumerate(grads):
            if self.spec == "scaledsign":
                sent.append(self.scaled_sign(g))
            elif self.spec == "ef-signsgd":
                p = self.held(rank, parts) + g
                delta = self.scaled_sign(p)
                self.keep(rank, parts, p - delta)
                sent.append(delta)
            else:
                h = self.held(rank, parts)
                c = self.message(g - h)
                self.keep(rank, parts, h + c)
                sent.append(c)
        total = sent[0].clone()
        for message in sent[1:]:
            total += message
        mean = total / self.world
        if self.spec.startswith("ef21"):
            mean = self.held("mean", parts) + mean
            self.keep("mean", parts, mean)
        return mean


def noisy(spec: str, options: dict, world: int):
    """The per-rank injected noise of a case (the hook's draw), or None."""
    if "noise" not in options:
        return None
    return Protocol(spec, 7, world, noise=options["noise"], randomness="independent")


def ddp_rule(spec: str, options: dict, world: int, layouts: list[dict]) -> list:
    rule, noise = Rule(spec, world), noisy(spec, options, world)
    params = [torch.zeros(s) for s in SHAPES]
    history = []
    for step in range(STEPS):
        per_rank = [dict(zip(NAMES, rank_grads(r, step), strict=True)) for r in range(world)]
        direction = {}
        for bucket in sorted(layouts[step]):
            names = layouts[step][bucket]
            parts = [(n, SIZES[n]) for n in names]
            flats = [torch.cat([g[n].reshape(-1) for n in names]) for g in per_rank]
            if noise is not None:
                for r, flat in enumerate(flats):
                    noise.inject_noise(flat, BucketKey(7, step, bucket, r))
            mean, offset = rule.bucket(flats, parts), 0
            for name, size in parts:
                direction[name] = mean[offset:offset + size]
                offset += size
        opt = torch.optim.SGD(params, lr=LR)
        for p, n in zip(params, NAMES, strict=True):
            p.grad = direction[n].view_as(p).clone()
        opt.step()
        history.append([p.clone() for p in params])
    return history


CASES = list(ddp_cases(3))


@pytest.mark.parametrize("name", CASES)
def test_ddp_hook_equals_the_rule_and_the_simulation(launched, name):
    world, ranks = launched
    spec, options = ddp_cases(world)[name]
    record = ranks[0]["ddp"][name]
    assert "error" not in record, record["error"]
    assert len(record["layouts"][0]) == 1 and len(record["layouts"][-1]) >= 2   # rebuilt
    sim, history = replay(spec, options, world, record["layouts"])
    expected = ddp_rule(spec, options, world, record["layouts"]) if name in DETERMINISTIC \
        else None
    for step in range(STEPS):
        for i, (got, want) in enumerate(zip(record["params"][step], history[step],
                                            strict=True)):
            if world == 2 or name in DETERMINISTIC or name in GATHERED:
                assert torch.equal(got, want), (name, step)
            else:                                    # a ring sum over 3 ranks: to rounding
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            if expected is not None:
                assert torch.equal(got, expected[step][i]), (name, step, "rule")
    assert record["counters"] == sim.counters()
    for other in ranks[1:]:
        for got, want in zip(other["ddp"][name]["params"][-1], record["params"][-1],
                             strict=True):
            assert torch.equal(got, want)


def payload_formula(name: str, d: int, world: int) -> tuple[int, float]:
    """(payload bytes, bytes moved per rank) of one bucket of ``d`` entries on each wire."""
    if name in ("scaledsign", "ef-signsgd", "ef-signsgd-noise", "ef21-scaledsign"):
        nbytes = 4 + math.ceil(d / 8) + 1                 # float32 scale, signs, status
        return nbytes, all_gather_bytes(nbytes, world)
    if name == "ef21-topk":
        nbytes = round(0.05 * d) * (4 + 4) + 1            # int32 index + float32 value
        return nbytes, all_gather_bytes(nbytes, world)
    if name == "ef21-randk":
        nbytes = 4 * (round(0.05 * d) + 1)                # kept values + status, summed
        return nbytes, allreduce_bytes(nbytes, world)
    if name == "ef21-identity":
        return 4 * d, allreduce_bytes(4 * d, world)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["scaledsign", "ef-signsgd", "ef21-topk", "ef21-scaledsign",
                                  "ef21-randk", "ef21-identity"])
def test_ddp_byte_counters_equal_the_payload_formula(launched, name):
    world, ranks = launched
    record = ranks[0]["ddp"][name]
    payload = moved = fp32 = 0.0
    for layout in record["layouts"]:
        for names in layout.values():
            d = sum(SIZES[n] for n in names)
            nbytes, per_rank = payload_formula(name, d, world)
            payload += nbytes
            moved += per_rank
            fp32 += allreduce_bytes(4 * d, world)
    counters = record["counters"]
    assert counters["payload_bytes"] == payload
    assert counters["bytes_sent"] == counters["bytes_received"] == moved
    assert counters["bytes_fp32_allreduce"] == fp32


@pytest.mark.parametrize("name", ["ef-signsgd", "ef21-topk", "ef21-randk"])
def test_ddp_state_is_checkpointed_with_the_hook(launched, name):
    """One buffer per rank for EF-signSGD (e), two for EF21 (h, ĥ): the pickled state holds
    this rank's buffers, the size of every gradient, equal to the simulation's."""
    world, ranks = launched
    spec, options = ddp_cases(world)[name]
    record = ranks[0]["ddp"][name]
    sim, _ = replay(spec, options, world, record["layouts"])
    total = sum(SIZES.values())
    names = ("error",) if name == "ef-signsgd" else ("ef21_h", "ef21_mean")
    for buffer in names:
        saved = record["pickled"][buffer]
        assert sum(m.numel() for *_, m in saved) == total
        mine = {b: m for (b, r), (_, m) in sim.buffers[buffer].items() if r == 0}
        assert {b for b, *_ in saved} == set(mine)
        for bucket, rank, _layout, m in saved:
            exact = world == 2 or name != "ef21-randk" or buffer == "ef21_h"
            if exact:
                assert rank == 0 and torch.equal(m, mine[bucket]), (buffer, bucket)
            else:
                torch.testing.assert_close(m, mine[bucket], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", RESUME_SPECS)
def test_ddp_checkpoint_resumes_to_the_same_parameters(launched, spec):
    _, ranks = launched
    for result in ranks:
        record = result["resume"][spec]
        for got, want in zip(record["resumed"], record["straight"], strict=True):
            assert torch.equal(got, want), spec


def fsdp_rule(layout: str, spec: str, world: int, exact: bool) -> list[dict]:
    """FSDP2's update: each unit's padded flat gradient (fsdp_flat) is one bucket of the rule
    (``exact``) or of AgentSimulator; each rank keeps its rows."""
    shapes = {n: p.shape for n, p in LayoutModel().named_parameters()}
    params = {n: torch.zeros(s) for n, s in shapes.items()}
    rule, sim = Rule(spec, world), AgentSimulator(spec, world, seed=7)
    history = []
    for step in range(STEPS):
        per_rank = [grads_for(r, step) for r in range(world)]
        for unit, names in enumerate(UNITS[layout]):
            flats = [fsdp_flat([g[n] for n in names], world) for g in per_rank]
            if exact:
                mean = rule.bucket(flats, [(f"unit{unit}", flats[0].numel())])
            else:
                mean = sim.reduce_bucket(torch.stack(flats), unit)
            sgd_from_rows(params, names, mean.view(world, -1), world)
        sim.step += 1
        history.append({n: p.clone() for n, p in params.items()})
    return history


FSDP_CASES = [(layout, spec) for layout in FSDP_LAYOUTS for spec in FSDP_SPECS]


@pytest.mark.parametrize(("layout", "spec"), FSDP_CASES, ids=[f"{a}-{b}" for a, b in FSDP_CASES])
def test_fsdp_reduce_scatter_equals_the_rule(launched, layout, spec):
    world, ranks = launched
    exact = not spec.startswith("ef21:randk")
    history = fsdp_rule(layout, spec, world, exact)
    for result in ranks:
        record = result["fsdp"][(layout, spec)]
        assert record["units"] == UNITS[layout]
        for step in range(STEPS):
            for param, want in history[step].items():
                got = record["params"][step][param]
                if exact or world < 3:
                    assert torch.equal(got, want), (step, param)
                else:                        # Rand-k's kept values summed by a 3-rank ring
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_fsdp_ef21_holds_two_padded_gradients_per_rank(launched):
    world, ranks = launched
    padded = sum(math.ceil(p.shape[0] / world) * world * math.prod(p.shape[1:])
                 for _, p in LayoutModel().named_parameters())
    assert ranks[0]["fsdp-state-bytes"] == 2 * 4 * padded
    assert ranks[0]["fsdp-buffers"] == {"ef21_h": 3, "ef21_mean": 3}    # one per unit
    assert ranks[0]["memory"]["plan"] == 2 * 4 * padded


def test_fsdp_refuses_state_the_device_cannot_hold(launched):
    _, ranks = launched
    memory = ranks[0]["memory"]
    message = memory["refused"]["memory"]
    assert "ef21:topk:ratio=0.05" in message and f"{memory['plan']} bytes" in message
    assert "only 1000 bytes are available" in message
    assert memory["registered"] == "ef21:topk:ratio=0.05"      # enough memory: registered
    assert "on_nonfinite 'skip' is not supported" in memory["refused"]["skip"]
    assert "on_nonfinite 'skip' is not supported" in ranks[0]["ddp-refused"]["skip"]


@pytest.mark.parametrize("spec", HSDP_SPECS)
def test_hsdp_across_nodes_of_one_rank_equals_the_rule(launched, spec):
    """A (N, 1) mesh: each rank a node holding whole units (no padding), the rule over N."""
    world, ranks = launched
    if world == 1:                  # a (1, 1) mesh: refused, R ≥ 2 replicas are needed
        assert "R ≥ 2 replicas" in ranks[0]["hsdp-refused"][spec]
        return
    shapes = {n: p.shape for n, p in LayoutModel().named_parameters()}
    params = {n: torch.zeros(s) for n, s in shapes.items()}
    rule = Rule(spec, world)
    for step in range(STEPS):
        per_rank = [grads_for(r, step) for r in range(world)]
        for unit, names in enumerate(UNITS["plain"]):
            flats = [fsdp_flat([g[n] for n in names], 1) for g in per_rank]
            mean = rule.bucket(flats, [(f"unit{unit}", flats[0].numel())])
            sgd_from_rows(params, names, mean.view(1, -1), 1)
        for result in ranks:
            for name, want in params.items():
                assert torch.equal(result["hsdp"][spec][step][name], want), (step, name)


@pytest.mark.parametrize("spec", ["ef-signsgd", "ef21:topk:ratio=0.2", "ef21:randk:ratio=0.2",
                                  "ef21:qsgd:levels=4"])
def test_simulator_state_pickles_and_resumes_bitwise(spec):
    sim = AgentSimulator(spec, 3, seed=1)
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 40, generator=gen) for _ in range(4)]
    for g in grads[:2]:
        sim.reduce_bucket(g.clone(), 0)
        sim.step += 1
    buffers = 1 if spec == "ef-signsgd" else 3 + 1       # every h_i and one ĥ
    resumed = pickle.loads(pickle.dumps(sim))
    fresh = AgentSimulator(spec, 3, seed=1)
    buffer = io.BytesIO()
    torch.save(sim.state_dict(), buffer)
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    assert resumed.state_bytes == fresh.state_bytes == sim.state_bytes == \
        (3 * 40 * 4 if spec == "ef-signsgd" else buffers * 40 * 4)
    for g in grads[2:]:
        a = sim.reduce_bucket(g.clone(), 0)
        for other in (resumed, fresh):
            assert torch.equal(a, other.reduce_bucket(g.clone(), 0))
            other.step += 1
        sim.step += 1


@pytest.mark.parametrize(("spec", "options", "match"), [
    ("ef-signsgd", {"on_nonfinite": "skip"}, "on_nonfinite 'skip' is not supported"),
    ("ef21:topk:ratio=0.1", {"on_nonfinite": "skip"}, "ef21_h, ef21_mean"),
    ("ef21:sign", {}, "compressor of ef21 must be contractive"),
    ("ef21:randk:k=50", {}, "bucket 0 has only d=40"),
])
def test_distributed_refusals(spec, options, match):
    with pytest.raises(ValueError, match=match):
        AgentSimulator(spec, 2, **options).reduce_bucket(torch.ones(2, 40), 0)


@pytest.mark.parametrize("spec", ["scaledsign", "ef-signsgd", "ef21:topk:ratio=0.1",
                                  "ef21:scaledsign", "ef21:randk:ratio=0.1",
                                  "ef21:bernoulli:p=0.1", "ef21:qsgd:levels=4", "ef21:natural",
                                  "ef21:identity"])
def test_trainer_accepts_the_methods(spec, tmp_path):
    from compsde.distributed.train import parse_args

    config = parse_args(["--method", spec, "--out", str(tmp_path / "out")])
    assert config.method == spec
    if spec != "scaledsign":
        with pytest.raises(ValueError, match="on_nonfinite 'skip' is not supported"):
            parse_args(["--method", spec, "--on-nonfinite", "skip", "--out",
                        str(tmp_path / "out")])
