"""Argument validation shared by every layer.

Every check raises ``ValueError`` whose message names the parameter, the value received and
the allowed values, so the CLI can print it as one line.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: the largest seed: torch.Generator.manual_seed takes a signed 64-bit integer
SEED_MAX = 2**63 - 1


def _fail(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{name} must be {allowed}, got {value!r}")


def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None, text: bool = True) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]`` (bounds inclusive, None = open).

    ``text=False`` refuses strings (the rule of the public API: numbers are passed as numbers;
    spec parsers pass ``text=True`` for the values they read from text).
    """
    allowed = "an integer"
    if minimum is not None and maximum is not None:
        allowed = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        allowed = f"an integer >= {minimum}"
    elif maximum is not None:
        allowed = f"an integer <= {maximum}"
    if isinstance(value, bool) or (not text and isinstance(value, (str, bytes))):
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
                low_open: bool = False, high_open: bool = False, text: bool = True) -> float:
    """Return ``value`` as a finite float in the interval given by ``low``/``high``.

    ``low_open``/``high_open`` exclude the end points, e.g. ``low=0, low_open=True`` is ``> 0``;
    ``text=False`` refuses strings (as :func:`check_int`).
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
    if not text and isinstance(value, (str, bytes)):
        raise _fail(name, value, allowed)
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


def check_positive(name: str, value: Any, *, text: bool = True) -> float:
    """Return ``value`` as a finite float > 0."""
    return check_float(name, value, low=0.0, low_open=True, text=text)


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed`` (names listed in the error)."""
    options = list(allowed)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}; got {value!r}")
    return value


DEVICE_TYPES = ("cpu", "cuda")


def check_device(value: Any, name: str = "device") -> Any:
    """Return ``value`` as a ``torch.device`` that exists on this machine.

    Allowed: ``cpu``, ``cuda`` or ``cuda:i`` with ``i`` below ``torch.cuda.device_count()``.
    One check for the simulator, the SDE integrator, the advisor and the trainer.
    """
    import torch

    allowed = "cpu or cuda[:i]"
    try:
        device = value if isinstance(value, torch.device) else torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise _fail(name, value, allowed) from None
    if device.type not in DEVICE_TYPES:
        raise _fail(name, value, allowed)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name} {str(value)!r} is not available on this machine (torch "
                             f"finds no CUDA device); use cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name} {str(value)!r} is not available: this machine has "
                             f"{count} CUDA device(s), cuda:0 … cuda:{count - 1}")
    return device


def check_out_dir(path: Any, name: str = "out") -> Path:
    """Create folder ``path`` (with parents) and check that a file can be written into it.

    Called before any work starts, so a finished computation is never lost to a folder that
    cannot be written. Raises ``ValueError`` naming ``name`` and the reason.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise _fail(name, path, "a folder path")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name} {str(folder)!r} is a file, not a folder; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"{name} {str(folder)!r} cannot be created or written ({reason}); "
                         f"choose a writable folder") from None
    return folder


def check_vector(name: str, value: Any) -> Any:
    """Return a number, a sequence of numbers or a tensor as a float64 tensor.

    Strings, booleans and nested non-numbers are refused with a ``ValueError`` naming ``name``.
    """
    import numpy as np
    import torch

    allowed = "a number, a sequence of numbers or a tensor"
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise _fail(name, value, allowed)
        return value.detach().to("cpu", torch.float64)
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise _fail(name, value, allowed)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise _fail(name, value, allowed) from None
    if array.dtype.kind not in "iuf":
        raise _fail(name, value, allowed)
    return torch.as_tensor(array, dtype=torch.float64)
