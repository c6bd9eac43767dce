"""On-disk cache of finished runs, so interrupted sweeps resume without recomputing anything.

docs/DESIGN.md ("Caches keyed by the code", "Atomic writes"): long work can be interrupted and
resumed; sweeps cache each finished run keyed by its config, and files are written atomically.
A run's key is the SHA-256 of its config as canonical JSON (sorted keys) together with a
code-version string; the entry is
``FOLDER/<key>.json`` holding ``{"key", "version", "config", "result", "digest"}``, written with
:func:`compsde.io.write_json` (temp file + rename), so a killed process leaves either no entry or
a complete one. ``digest`` is the SHA-256 of the result's canonical JSON: an entry is verified
on load, and one that is damaged (unreadable, missing keys, NaN, a result that is not the one
stored, another config under its key) is recomputed with one warning line; an entry of other
code (another version) is recomputed silently.

The default version is :data:`CODE_VERSION` (the entry format) joined with
:func:`code_fingerprint` (the package version and a hash of every source file of the
package), so a run computed by other code never answers for this code. Inside
:func:`recomputing` every lookup misses, so everything is computed afresh (and stored again).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..executors import Executor
from ..executors import resolve as resolve_executor
from ..io import jsonable, write_json

CODE_VERSION = "compsde-runs-2"
_RECOMPUTE: contextvars.ContextVar[bool] = contextvars.ContextVar("recompute", default=False)


@functools.cache
def code_fingerprint() -> str:
    """``VERSION+HASH``: compsde's version and a SHA-256 over its source files (path + bytes)."""
    from importlib import metadata

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    try:
        version = metadata.version("compsde")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{version}+{digest.hexdigest()[:16]}"


def default_version() -> str:
    """The cache version of this code: entry format and :func:`code_fingerprint`."""
    return f"{CODE_VERSION}:{code_fingerprint()}"


@contextlib.contextmanager
def recomputing() -> Iterator[None]:
    """Within this block every cache lookup misses: runs are computed again and re-stored."""
    token = _RECOMPUTE.set(True)
    try:
        yield
    finally:
        _RECOMPUTE.reset(token)


def _plain(value: Any) -> Any:
    """NumPy scalars as Python numbers (anything else is not a config value)."""
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def canonical(config: Mapping[str, Any]) -> str:
    """Canonical JSON text of ``config`` (sorted keys, no whitespace, floats as JSON writes them).

    Only JSON-representable values are accepted; a NaN or an object raises ``ValueError`` naming
    ``config`` so that a key can never depend on an object's ``repr``.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping of JSON values, got {type(config).__name__}")
    try:
        return json.dumps(dict(config), sort_keys=True, separators=(",", ":"),
                          allow_nan=False, default=_plain)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config must hold only JSON values (str, int, finite float, bool, "
                         f"None, lists, dicts): {exc}") from None


def result_digest(result: Mapping[str, Any]) -> str:
    """SHA-256 of ``result`` as stored (canonical JSON, NaN and infinities as null)."""
    text = json.dumps(jsonable(dict(result)), sort_keys=True, separators=(",", ":"),
                      allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


class CacheWarning(UserWarning):
    """A cache entry was damaged and is recomputed."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"holds {name}, which a stored result never does")


def config_key(config: Mapping[str, Any], version: str | None = None) -> str:
    """The 20-hex-digit hash that names a run: SHA-256 of ``version`` + canonical config.

    ``version`` defaults to :func:`default_version` (so the key changes with the code).
    """
    version = default_version() if version is None else version
    digest = hashlib.sha256(f"{version}\n{canonical(config)}".encode())
    return digest.hexdigest()[:20]


class RunCache:
    """Finished runs stored as one JSON file each under ``folder``."""

    def __init__(self, folder: str | Path, version: str | None = None):
        version = default_version() if version is None else version
        if not isinstance(version, str) or not version:
            raise ValueError(f"version must be a non-empty string, got {version!r}")
        self.folder = Path(folder)
        self.version = version

    def key(self, config: Mapping[str, Any]) -> str:
        return config_key(config, self.version)

    def path(self, config: Mapping[str, Any]) -> Path:
        return self.folder / f"{self.key(config)}.json"

    def load(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored result of ``config``, or None when absent, of other code, damaged (one
        warning line naming the entry), or inside :func:`recomputing`."""
        if _RECOMPUTE.get():
            return None
        result, problem = self.verified(config)
        if problem is not None:
            warnings.warn(f"cache entry {self.path(config)} {problem}; recomputing it "
                          f"(--no-cache recomputes every run)", CacheWarning, stacklevel=2)
        return result

    def stored(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """What the entry of ``config`` holds now (also inside :func:`recomputing`), None
        when absent, of other code or damaged."""
        return self.verified(config)[0]

    def verified(self, config: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """``(result, None)`` for a sound entry of ``config``; ``(None, None)`` when there is
        none or it is of another version; ``(None, why)`` when it is damaged."""
        path = self.path(config)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"cannot be read ({type(exc).__name__})"
        try:
            entry = json.loads(text, parse_constant=_no_constants)
        except ValueError as exc:
            return None, f"is not valid JSON ({str(exc).splitlines()[0]})"
        if not isinstance(entry, dict):
            return None, "is not a JSON object"
        if entry.get("version") != self.version:
            return None, None
        missing = sorted({"config", "result", "digest"} - set(entry))
        if missing:
            return None, f"lacks {', '.join(missing)}"
        try:
            same = canonical(entry["config"]) == canonical(config)
        except ValueError:
            same = False
        if not same:
            return None, "holds another config under this config's key"
        result = entry["result"]
        if not isinstance(result, dict) or entry["digest"] != result_digest(result):
            return None, "holds a result that is not the one stored (its digest differs)"
        return result, None

    def store(self, config: Mapping[str, Any], result: Mapping[str, Any]) -> Path:
        """Write ``result`` for ``config`` atomically; returns the entry's path."""
        if not isinstance(result, Mapping):
            raise ValueError(f"result must be a mapping, got {type(result).__name__}")
        entry = {"key": self.key(config), "version": self.version,
                 "config": json.loads(canonical(config)), "result": dict(result),
                 "digest": result_digest(result)}
        return write_json(self.path(config), entry)

    def __contains__(self, config: Mapping[str, Any]) -> bool:
        return self.load(config) is not None


@dataclass
class SweepOutcome:
    """Results of a sweep in config order, and which runs were computed or loaded."""

    results: list[dict[str, Any]]
    computed: list[int] = field(default_factory=list)
    loaded: list[int] = field(default_factory=list)
    seconds_computing: float = 0.0

    def summary(self) -> str:
        return (f"{len(self.computed)} run(s) computed, {len(self.loaded)} loaded from the "
                f"cache")


def run_sweep(configs: Sequence[Mapping[str, Any]],
              compute: Callable[[Mapping[str, Any]], Mapping[str, Any]],
              cache: RunCache, *, progress: bool = False, desc: str = "runs",
              on_done: Callable[[int, Mapping[str, Any], dict[str, Any], bool], None]
              | None = None, jobs: int = 1,
              executor: Executor | str | None = None) -> SweepOutcome:
    """Run ``compute(config)`` for every config not yet in ``cache``; store each as it finishes.

    ``on_done(index, config, result, cached)`` is called after every run (the cached ones
    first, then the computed ones as they finish); an exception raised there (or a
    KeyboardInterrupt anywhere) stops the sweep, and every run finished before it stays
    cached, so calling ``run_sweep`` again resumes where it stopped. A run that raises stops
    the sweep with :class:`~compsde.executors.TaskFailed` naming its config. A result that is
    not JSON-serialisable raises ``ValueError`` before anything is written.

    ``executor`` (``local``, ``processes:N``, ``ray[:ADDRESS]``; ``jobs > 1`` is shorthand for
    ``processes:jobs``) decides where runs are computed, one run per task; results return to
    this process and are cached here, so workers need no shared file system. ``compute`` must
    then be picklable (a module-level function or a ``functools.partial`` of one). Results
    come back in config order on every executor. One progress bar (runs done / total, time
    left) covers the sweep.
    """
    from ..progress import progress_bar

    chosen = resolve_executor(executor, jobs)
    outcome = SweepOutcome(results=[{}] * len(configs))
    keys = [cache.key(c) for c in configs]  # validates every config before any work
    if len(set(keys)) != len(keys):
        raise ValueError("configs must be distinct (two configs of the sweep hash to the same "
                         "key)")
    cached, pending = [], []
    for index, config in enumerate(configs):
        result = cache.load(config)
        if result is None:
            pending.append(index)
        else:
            cached.append((index, result))
    with progress_bar(len(configs), desc=desc, enabled=progress, unit="run",
                      initial=len(cached)) as bar:

        def finish(index: int, result: dict[str, Any], was_cached: bool) -> None:
            (outcome.loaded if was_cached else outcome.computed).append(index)
            outcome.results[index] = result
            if on_done is not None:
                on_done(index, configs[index], result, was_cached)

        for index, result in cached:
            finish(index, result, True)
        for position, result, seconds in chosen.imap(compute, [configs[i] for i in pending]):
            index = pending[position]
            outcome.seconds_computing += seconds
            stored = _store(configs[index], dict(result), cache)
            bar.update(1)
            finish(index, stored, False)
    outcome.computed.sort()
    outcome.loaded.sort()
    return outcome


def _store(config: Mapping[str, Any], result: dict[str, Any], cache: RunCache) -> dict[str, Any]:
    cache.store(config, result)
    stored = cache.stored(config)  # exactly what a later resume would see
    assert stored is not None
    return stored
