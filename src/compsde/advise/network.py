"""Bytes on the wire and an alpha-beta model of the collective that carries them.

Which collective a method uses follows ``compsde.distributed.codecs``: DSGD and summable
messages (identity, Rand-k and Bernoulli with shared-seed indices: only the kept values travel)
go through a **ring allreduce**; QSGD, natural compression and DSignSGD's sign bits cannot be
summed in compressed form and go through a **ring all-gather**. For a message of S bytes per
agent, N agents, latency α (seconds per message) and bandwidth β (bytes/s):

    allreduce  t = 2(N−1)α + 2(N−1)/N · S/β        all-gather  t = (N−1)α + (N−1) · S/β

(Thakur, Rabenseifner & Gropp 2005; the byte counts are ``distributed.wire``'s). N = 1 costs 0.
DSignSGD from N = 5 on uses the sign reduce-scatter, ``2(N−1)α + (N−1)/N·(1 + b)·d/8 / β``
with ``b = ⌈log₂(N + 1)⌉``; :func:`method_traffic` gives every method's bytes exactly as the
hook's counters add them (one function for both).
"""

from __future__ import annotations

import math
import re

import torch

from ..compressors import Compressor
from ..distributed.wire import all_gather_bytes, allreduce_bytes, bucket_traffic

ALLREDUCE, ALL_GATHER = "allreduce", "all_gather"
_SUMMABLE = ("identity", "randk", "bernoulli")

_BITRATE = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
_BYTERATE = {"b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "tb/s": 1e12}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_NUMBER = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"


def parse_bandwidth(text: str) -> float:
    """Bandwidth in **bytes per second** from ``1gbit``, ``100mbit``, ``10Gbit``, ``1.5GB/s``, …

    ``bit``/``kbit``/``mbit``/``gbit``/``tbit`` are bits per second (as in ``tc``),
    ``B/s``/``KB/s``/``MB/s``/``GB/s`` bytes per second (decimal prefixes).
    """
    match = re.fullmatch(_NUMBER + r"([a-zA-Z/]+)\s*", str(text))
    if match:
        value, unit = float(match.group(1)), match.group(2)
        if unit.lower() in _BITRATE:
            rate = value * _BITRATE[unit.lower()] / 8.0
        elif unit.endswith("B/s") and unit.lower() in _BYTERATE:
            rate = value * _BYTERATE[unit.lower()]
        else:
            rate = math.nan
        if math.isfinite(rate) and rate > 0:
            return rate
    raise ValueError(f"bandwidth must be a positive rate such as 1gbit, 100mbit, 10gbit or "
                     f"1.5GB/s, got {text!r}")


def parse_duration(text: str, name: str = "latency") -> float:
    """Seconds from ``50us``, ``0.2ms``, ``1e-4s`` or ``0``; errors name ``name``."""
    text = str(text).strip()
    if text in ("0", "0.0"):
        return 0.0
    match = re.fullmatch(_NUMBER + r"(s|ms|us|µs|ns)\s*", text)
    if match and float(match.group(1)) >= 0:
        return float(match.group(1)) * _TIME[match.group(2)]
    raise ValueError(f"{name} must be a non-negative time such as 50us, 0.2ms or 0, "
                     f"got {text!r}")


def parse_latency(text: str) -> float:
    """Latency in seconds (:func:`parse_duration`)."""
    return parse_duration(text, "latency")


def collective_for(method: str, compressor: Compressor | None) -> str:
    """``"allreduce"`` or ``"all_gather"`` for a method and its compressor (module docstring)."""
    if method == "dsgd" or (method == "dcsgd" and compressor is not None
                            and compressor.name in _SUMMABLE):
        return ALLREDUCE
    return ALL_GATHER


def message_bytes(method: str, compressor: Compressor | None, d: int) -> int:
    """Bytes one agent sends per step: ``wire_bits(d)/8`` of its compressor (float32 values)."""
    from .. import compressors

    comp = compressor
    if method == "dsgd":
        comp = compressors.make("identity")
    elif method == "dsignsgd":
        comp = compressors.make("sign")
    return math.ceil(comp.wire_bits(d, torch.float32) / 8)  # type: ignore[union-attr]


def moved_bytes(collective: str, nbytes: int, agents: int) -> float:
    """Bytes each agent sends (and receives) in the ring collective."""
    if collective == ALLREDUCE:
        return allreduce_bytes(nbytes, agents)
    return all_gather_bytes(nbytes, agents)


def comm_seconds(collective: str, nbytes: int, agents: int, bandwidth: float,
                 latency: float) -> float:
    """Alpha-beta time of one collective (module docstring); 0 for one agent."""
    if agents <= 1:
        return 0.0
    messages = 2 * (agents - 1) if collective == ALLREDUCE else agents - 1
    return messages * latency + moved_bytes(collective, nbytes, agents) / bandwidth


def method_traffic(method: str, compressor: Compressor | None, d: int,
                   agents: int) -> tuple[str, float, float]:
    """``(collective, payload, moved)`` per step of the wire the DDP hook uses for ``d``
    values in one bucket: :func:`compsde.distributed.wire.bucket_traffic`, the sizes the
    hook's byte counters add up (DSignSGD's ``auto`` wire: the bit all-gather up to N = 4,
    the sign reduce-scatter beyond)."""
    return bucket_traffic(method, compressor, d, agents)


def traffic_seconds(collective: str, moved: float, agents: int, bandwidth: float,
                    latency: float) -> float:
    """Alpha-beta time of ``moved`` bytes per rank: ``2(N−1)`` latencies for an allreduce and
    for the sign reduce-scatter (all-to-all + all-gather), ``N−1`` for an all-gather."""
    if agents <= 1:
        return 0.0
    messages = agents - 1 if collective == ALL_GATHER else 2 * (agents - 1)
    return messages * latency + moved / bandwidth
