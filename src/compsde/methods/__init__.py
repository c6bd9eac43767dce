"""The distributed methods: what each agent sends and how the server combines (THEORY.md §2, §8).

The paper's three (:mod:`.base`, :mod:`.signs`):

- DSGD:      m_i = g_i,            x ← x − η · mean_i m_i
- DCSGD:     m_i = C_i(g_i),       C_i unbiased with variance parameter ω_i
- DSignSGD:  m_i = sign(g_i),      the server averages the signs (not a majority vote)

Beyond the paper (THEORY.md §8), read by the layers through capability attributes (``server``,
``stateful``, ``feedback``, ``state_buffers``, ``sends_signs``) rather than their names:
``dsignsgd:vote=majority``, ``signum:beta=B[,vote=majority]``, ``scaledsign`` (:mod:`.signs`),
``ef21:<compressor>`` and ``ef-signsgd`` (:mod:`.feedback`).

A new method is a class in its own module plus one line of :data:`BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable

from .._spec import parse_spec, reject_unknown, split_head
from .base import DCSGD, DSGD, Method
from .feedback import EF21, EFSignSGD
from .signs import DSignSGD, MajorityVote, ScaledSignSGD, Signum, majority_vote

__all__ = [
    "BUILDERS",
    "DCSGD",
    "DSGD",
    "EF21",
    "METHOD_NAMES",
    "DSignSGD",
    "EFSignSGD",
    "MajorityVote",
    "Method",
    "ScaledSignSGD",
    "Signum",
    "majority_vote",
    "make",
]

VOTES = ("majority",)


def _vote(spec: str, options: dict[str, str]) -> bool:
    value = options.get("vote")
    if value is None:
        return False
    if value.lower() not in VOTES:
        raise ValueError(f"vote of {spec!r} must be one of {', '.join(VOTES)}, got {value!r}")
    return True


def _sign_family(name: str, spec: str) -> Method:
    """``dsignsgd:vote=majority`` or ``signum:beta=B[,vote=majority]`` (THEORY.md §8)."""
    _, options = parse_spec(spec, "method")
    if name == "dsignsgd":
        reject_unknown("method", name, options, {"vote"})
        return MajorityVote() if _vote(spec, options) else DSignSGD()
    reject_unknown("method", name, options, {"beta", "vote"})
    if "beta" not in options:
        raise ValueError(f"method 'signum' needs beta in [0, 1), e.g. 'signum:beta=0.9'; "
                         f"got {spec!r}")
    try:
        beta = float(options["beta"])
    except ValueError:
        raise ValueError(f"beta of signum must be a number in [0, 1), got "
                         f"{options['beta']!r}") from None
    return Signum(beta, vote=_vote(spec, options))


def _dcsgd(spec: str, rest: str) -> Method:
    if not rest:
        raise ValueError("method 'dcsgd' needs a compressor, e.g. 'dcsgd:randk:ratio=0.1'")
    if rest.split("=")[0].strip().lower() == "omega":
        raise ValueError(f"method {spec!r} gives only ω, which the closed forms (compsde "
                         f"scale, theory) take but a simulation cannot run: it needs a "
                         f"compressor with that ω, e.g. dcsgd:bernoulli:p=P with ω = "
                         f"1/p − 1 at every d, or dcsgd:randk:k=K with ω = d/k − 1")
    return DCSGD(rest)


def _ef21(spec: str, rest: str) -> Method:
    if not rest:
        raise ValueError("method 'ef21' needs a contractive compressor, e.g. "
                         "'ef21:topk:ratio=0.1', 'ef21:scaledsign' or 'ef21:randk:ratio=0.1'")
    return EF21(rest)


def _plain(cls: Callable[[], Method]) -> Callable[[str, str], Method]:
    def build(spec: str, rest: str) -> Method:
        if rest:
            raise ValueError(f"method {split_head(spec, 'method')[0]!r} takes no options, "
                             f"got {spec!r}")
        return cls()
    return build


def _dsignsgd(spec: str, rest: str) -> Method:
    return _sign_family("dsignsgd", spec) if rest else DSignSGD()


# name -> builder(spec, text after "name:"); one line per method
BUILDERS: dict[str, Callable[[str, str], Method]] = {
    "dsgd": _plain(DSGD),
    "dcsgd": _dcsgd,
    "dsignsgd": _dsignsgd,
    "signum": lambda spec, rest: _sign_family("signum", spec),
    "scaledsign": _plain(ScaledSignSGD),
    "ef21": _ef21,
    "ef-signsgd": _plain(EFSignSGD),
}
METHOD_NAMES = tuple(BUILDERS)


def make(spec: str) -> Method:
    """Build a method from its spec: ``"dsgd"``, ``"dcsgd:<compressor>"``,
    ``"dsignsgd[:vote=majority]"``, ``"signum:beta=B[,vote=majority]"``, ``"scaledsign"``,
    ``"ef21:<compressor>"`` or ``"ef-signsgd"``."""
    name, rest = split_head(spec, "method")
    if name not in BUILDERS:
        raise ValueError(f"method must be one of {', '.join(METHOD_NAMES)} "
                         f"(dcsgd as 'dcsgd:<compressor>', e.g. dcsgd:randk:ratio=0.1; "
                         f"signum as 'signum:beta=0.9'; ef21 as 'ef21:topk:ratio=0.1'); "
                         f"got {spec!r}")
    try:
        return BUILDERS[name](spec, rest)
    except ValueError as exc:     # name the spec: "method 'ef21:sign': compressor of ef21 …"
        if str(exc).startswith("method"):
            raise
        raise ValueError(f"method {spec!r}: {exc}") from None
