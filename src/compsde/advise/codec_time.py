"""The advisor's codec term: one rank's encode, reduce and decode time of a method's wire.

Compressed methods pay compute that fp32 allreduce does not: packing signs, drawing Rand-k
indices, decoding counts back into floats. :func:`codec_seconds` measures it on this machine by
running the hook's own codec (:func:`compsde.distributed.codecs.make_codec`, the one
``register`` installs for a bucket of ``d`` values on ``agents`` ranks) through one rank's work
of a step, the collectives left out: encode, the sign reduce-scatter's count of this rank's
shard where the wire has one, and the decode of the combined messages into the bucket. The
time is the median of at least ``repeats`` rounds, and of as many as span :data:`MIN_SECONDS`
(up to :data:`MAX_ROUNDS`: a load spike then moves one round, not the median), after one
warm-up round, on the current torch thread settings (the hooks run with the process's threads
too).
"""

from __future__ import annotations

import statistics
import time

import torch

from .._checks import check_int
from ..compressors import Compressor

MIN_SECONDS = 0.05   # rounds are repeated until they span this long (a load spike is one round)
MAX_ROUNDS = 200
_measured: dict[tuple, float] = {}
_parts: dict[tuple, dict[str, float]] = {}


def method_spec(method: str, compressor: Compressor | None) -> str:
    """The method spec of ``method`` (dsgd, dcsgd, dsignsgd) with ``compressor``."""
    if method in ("dsgd", "dsignsgd"):
        return method
    if compressor is None:
        raise ValueError("compressor: dcsgd needs a compressor")
    return f"dcsgd:{compressor.spec}"


def codec_seconds(method: str, compressor: Compressor | None, d: int, agents: int, *,
                  sign_wire: str = "auto", randomness: str = "shared", repeats: int = 5,
                  dtype: torch.dtype = torch.float32) -> float:
    """Seconds one rank spends encoding, reducing and decoding one step of ``d`` values on
    ``agents`` ranks (module docstring); 0 for one agent. Results are cached per setting."""
    from ..distributed.codecs import SCATTER, BucketKey
    from ..distributed.protocol import Protocol

    d = check_int("d", d, minimum=1)
    agents = check_int("agents", agents, minimum=1)
    repeats = check_int("repeats", repeats, minimum=1)
    spec = method_spec(method, compressor)
    key = (spec, d, agents, sign_wire, randomness, repeats, dtype, torch.get_num_threads())
    if agents == 1:
        return 0.0
    if key in _measured:
        return _measured[key]
    protocol = Protocol(spec, seed=0, world=agents, rank=0, sign_wire=sign_wire,
                        randomness=randomness)
    grad = torch.randn(d, generator=torch.Generator().manual_seed(0), dtype=dtype)
    work, out = torch.empty_like(grad), torch.empty_like(grad)
    codec = protocol.codec(0, grad)
    bucket = BucketKey(0, 0, 0, 0)

    def encode() -> torch.Tensor:
        return codec.encode(work, bucket, False)

    def combine(payload: torch.Tensor) -> torch.Tensor:
        """The buffer the collective fills, filled once with this rank's messages."""
        if codec.collective == SCATTER:
            received = payload.clone()
            codec.gathered.copy_(codec.reduce(received).view(1, -1).expand_as(codec.gathered))
            return received
        if codec.gathered is not None:
            codec.gathered.copy_(payload.view(1, -1).expand_as(codec.gathered))
            return codec.gathered
        return payload

    work.copy_(grad)
    combined = combine(encode())
    rounds, parts = [], []
    while len(rounds) < repeats + 1 or (sum(rounds[1:]) < MIN_SECONDS
                                        and len(rounds) < MAX_ROUNDS):
        work.copy_(grad)
        started = time.perf_counter()
        payload = encode()
        encoded = time.perf_counter()
        if codec.collective == SCATTER:
            codec.replicate(codec.reduce(combined))
            reduced = time.perf_counter()
            codec.decode(codec.gathered, bucket, out)
        else:
            reduced = time.perf_counter()
            codec.decode(combined if codec.gathered is not None else payload, bucket, out)
        done = time.perf_counter()
        rounds.append(done - started)
        parts.append((encoded - started, reduced - encoded, done - reduced))
    _measured[key] = seconds = statistics.median(rounds[1:])
    _parts[key] = {name: statistics.median(p[i] for p in parts[1:])
                   for i, name in enumerate(("encode", "reduce", "decode"))}
    return seconds


def codec_parts(method: str, compressor: Compressor | None, d: int, agents: int, *,
                sign_wire: str = "auto", randomness: str = "shared", repeats: int = 5,
                dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """The medians of :func:`codec_seconds`'s three parts, seconds: ``encode`` (one rank's
    message), ``reduce`` (the sign reduce-scatter's count of one shard, else 0) and
    ``decode`` (the combined messages into the bucket); zeros for one agent."""
    codec_seconds(method, compressor, d, agents, sign_wire=sign_wire, randomness=randomness,
                  repeats=repeats, dtype=dtype)
    key = (method_spec(method, compressor), int(d), int(agents), sign_wire, randomness,
           int(repeats), dtype, torch.get_num_threads())
    return dict(_parts.get(key, {"encode": 0.0, "reduce": 0.0, "decode": 0.0}))
