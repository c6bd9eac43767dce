"""On-disk cache of finished runs, so interrupted sweeps resume without recomputing anything.

DESIGN.md (conventions): long work can be interrupted and resumed; sweeps cache each finished run
keyed by its config, and files are written atomically. A run's key is the SHA-256 of its config
as canonical JSON (sorted keys) together with a code-version string; the entry is
``FOLDER/<key>.json`` holding ``{"key", "version", "config", "result"}``, written with
:func:`compsde.io.write_json` (temp file + rename), so a killed process leaves either no entry or
a complete one. An unreadable or mismatching entry counts as missing and is recomputed.

Bump :data:`CODE_VERSION` (or pass ``version=``) whenever the code that produces results changes
what a run returns; old entries then no longer match.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_int
from ..io import write_json

CODE_VERSION = "compsde-runs-1"


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


def config_key(config: Mapping[str, Any], version: str = CODE_VERSION) -> str:
    """The 20-hex-digit hash that names a run: SHA-256 of ``version`` + canonical config."""
    digest = hashlib.sha256(f"{version}\n{canonical(config)}".encode())
    return digest.hexdigest()[:20]


class RunCache:
    """Finished runs stored as one JSON file each under ``folder``."""

    def __init__(self, folder: str | Path, version: str = CODE_VERSION):
        if not isinstance(version, str) or not version:
            raise ValueError(f"version must be a non-empty string, got {version!r}")
        self.folder = Path(folder)
        self.version = version

    def key(self, config: Mapping[str, Any]) -> str:
        return config_key(config, self.version)

    def path(self, config: Mapping[str, Any]) -> Path:
        return self.folder / f"{self.key(config)}.json"

    def load(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored result of ``config``, or None when absent, unreadable or not this config."""
        path = self.path(config)
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if (not isinstance(entry, dict) or entry.get("version") != self.version
                or canonical(entry.get("config", {})) != canonical(config)
                or not isinstance(entry.get("result"), dict)):
            return None
        return entry["result"]

    def store(self, config: Mapping[str, Any], result: Mapping[str, Any]) -> Path:
        """Write ``result`` for ``config`` atomically; returns the entry's path."""
        if not isinstance(result, Mapping):
            raise ValueError(f"result must be a mapping, got {type(result).__name__}")
        entry = {"key": self.key(config), "version": self.version,
                 "config": json.loads(canonical(config)), "result": dict(result)}
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
              | None = None, jobs: int = 1) -> SweepOutcome:
    """Run ``compute(config)`` for every config not yet in ``cache``; store each as it finishes.

    ``on_done(index, config, result, cached)`` is called after every run (loaded or computed);
    an exception raised there (or a KeyboardInterrupt anywhere) stops the sweep, and every run
    finished before it stays cached, so calling ``run_sweep`` again resumes where it stopped.
    A result that is not JSON-serialisable raises ``ValueError`` before anything is written.

    ``jobs > 1`` computes that many runs at once in worker processes (``spawn``); ``compute``
    must then be picklable (a module-level function or a ``functools.partial`` of one). Results
    come back in config order either way; ``on_done`` sees runs in the order they finish.
    """
    from ..progress import progress_bar

    jobs = check_int("jobs", jobs, minimum=1)
    outcome = SweepOutcome(results=[{}] * len(configs))
    keys = [cache.key(c) for c in configs]  # validates every config before any work
    if len(set(keys)) != len(keys):
        raise ValueError("configs must be distinct (two configs of the sweep hash to the same "
                         "key)")
    with progress_bar(len(configs), desc=desc, enabled=progress, unit="run") as bar:

        def finish(index: int, result: dict[str, Any], cached: bool) -> None:
            (outcome.loaded if cached else outcome.computed).append(index)
            outcome.results[index] = result
            bar.update(1)
            if on_done is not None:
                on_done(index, configs[index], result, cached)

        pending = []
        for index, config in enumerate(configs):
            result = cache.load(config)
            if result is not None:
                finish(index, result, True)
            elif jobs == 1:
                result, seconds = _timed(compute, config)
                outcome.seconds_computing += seconds
                finish(index, _store(config, result, cache), False)
            else:
                pending.append(index)
        if pending:
            _run_parallel(pending, configs, compute, cache, outcome, jobs, finish)
    outcome.computed.sort()
    outcome.loaded.sort()
    return outcome


def _store(config: Mapping[str, Any], result: dict[str, Any], cache: RunCache) -> dict[str, Any]:
    cache.store(config, result)
    stored = cache.load(config)  # exactly what a later resume would see
    assert stored is not None
    return stored


def _timed(compute: Callable[[Mapping[str, Any]], Mapping[str, Any]],
           config: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    return dict(compute(config)), time.perf_counter() - started


def _run_parallel(pending: list[int], configs: Sequence[Mapping[str, Any]],
                  compute: Callable[[Mapping[str, Any]], Mapping[str, Any]], cache: RunCache,
                  outcome: SweepOutcome, jobs: int,
                  finish: Callable[[int, dict[str, Any], bool], None]) -> None:
    """Compute ``pending`` runs in ``jobs`` worker processes; store each as it finishes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=context) as pool:
        futures = {pool.submit(_timed, compute, configs[i]): i for i in pending}
        try:
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    index = futures.pop(future)
                    result, seconds = future.result()
                    outcome.seconds_computing += seconds
                    finish(index, _store(configs[index], result, cache), False)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
