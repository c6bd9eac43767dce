"""Parsing of spec strings such as ``randk:ratio=0.1`` or ``student-t:nu=1,scale=2``.

Grammar: ``NAME[:KEY=VALUE[,KEY=VALUE...]]``. For methods the part after the first colon may
itself be a spec (``dcsgd:randk:k=10``); :func:`split_head` separates the head only.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


def split_head(spec: str, what: str) -> tuple[str, str]:
    """Split ``"name:rest"`` into ``("name", "rest")``; ``rest`` is ``""`` when absent."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{what} spec must be a non-empty string such as 'name:key=value', "
                         f"got {spec!r}")
    head, _, rest = spec.strip().partition(":")
    head = head.strip().lower()
    if not _NAME.match(head):
        raise ValueError(f"{what} spec {spec!r} is malformed: {head!r} is not a name")
    return head, rest.strip()


def parse_spec(spec: str, what: str) -> tuple[str, dict[str, str]]:
    """Parse ``"name:k1=v1,k2=v2"`` into ``("name", {"k1": "v1", "k2": "v2"})``.

    Values stay strings; the owner converts and validates them. Raises ``ValueError`` naming
    ``what`` (e.g. ``"compressor"``) for malformed input and repeated keys.
    """
    name, rest = split_head(spec, what)
    options: dict[str, str] = {}
    if rest:
        for item in rest.split(","):
            key, sep, value = item.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep or not _KEY.match(key) or not value:
                raise ValueError(f"{what} spec {spec!r} is malformed: expected key=value, "
                                 f"got {item.strip()!r}")
            if key in options:
                raise ValueError(f"{what} spec {spec!r} repeats the key {key!r}")
            options[key] = value
    return name, options


def reject_unknown(what: str, name: str, options: dict[str, str], allowed: set[str]) -> None:
    """Raise if ``options`` holds keys outside ``allowed``."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        allowed_text = ", ".join(sorted(allowed)) if allowed else "none"
        raise ValueError(f"{what} {name!r} does not take {', '.join(unknown)}; "
                         f"allowed keys: {allowed_text}")


def parse_float_list(what: str, text: str) -> list[float]:
    """Parse ``"1/2/3"`` (per-agent values separated by '/') into floats."""
    try:
        return [float(part) for part in text.split("/")]
    except ValueError:
        raise ValueError(f"{what} must be a number or numbers separated by '/', "
                         f"got {text!r}") from None
