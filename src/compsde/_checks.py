"""Argument validation shared by every layer.

Every check raises ``ValueError`` whose message names the parameter, the value received and
the allowed values, so the CLI can print it as one line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def _fail(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{name} must be {allowed}, got {value!r}")


def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]`` (bounds inclusive, None = open)."""
    allowed = "an integer"
    if minimum is not None and maximum is not None:
        allowed = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        allowed = f"an integer >= {minimum}"
    elif maximum is not None:
        allowed = f"an integer <= {maximum}"
    if isinstance(value, bool):
        raise _fail(name, value, allowed)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        try:
            value = int(str(value))
        except (TypeError, ValueError):
            raise _fail(name, value, allowed) from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(name, value, allowed)
    return value


def check_float(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a finite float in the interval given by ``low``/``high``.

    ``low_open``/``high_open`` exclude the end points, e.g. ``low=0, low_open=True`` is ``> 0``.
    """
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    if low is not None and high is not None:
        allowed = f"a number in {lo}{low}, {high}{hi}"
    elif low is not None:
        allowed = f"a number {'>' if low_open else '>='} {low}"
    elif high is not None:
        allowed = f"a number {'<' if high_open else '<='} {high}"
    else:
        allowed = "a finite number"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(name, value, allowed) from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise _fail(name, value, allowed)
    if low is not None and (number < low or (low_open and number == low)):
        raise _fail(name, value, allowed)
    if high is not None and (number > high or (high_open and number == high)):
        raise _fail(name, value, allowed)
    return number


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a finite float > 0."""
    return check_float(name, value, low=0.0, low_open=True)


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed`` (names listed in the error)."""
    options = list(allowed)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}; got {value!r}")
    return value
