"""Atomic writing of results: a temp file in the target folder, then ``os.replace``.

Files get the permissions of a plain ``open()`` (``0o666`` less the user's umask), so shared
results stay readable; :func:`versions` is what every ``result.json`` records.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """``value`` as :func:`write_json` stores it: NumPy values as Python ones, NaN and
    infinities as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open()`` would give a new file."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # /proc/self/status reads the umask without changing it (os.umask would, briefly, for every
    # thread of the process); elsewhere fall back to setting and restoring it.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@functools.cache
def versions() -> dict[str, str]:
    """Versions of compsde, torch, numpy and Python, and the platform, for ``result.json``."""
    import torch

    from . import __version__

    return {"compsde": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (readers see the old or the new file, never half).

    The file's mode is :func:`file_mode` (``mkstemp`` alone would give ``0o600``).
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {target}: a folder is in its place")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; NaN and infinities become ``null``."""
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False)
    return write_atomic(path, (text + "\n").encode())


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    import io as _io

    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return write_atomic(path, buffer.getvalue())
