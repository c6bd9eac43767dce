"""Where independent tasks run: this process, local worker processes, or a Ray cluster.

Specs (``make``): ``local`` (in this process, one task after the other), ``processes:N`` (N
worker processes of this machine, ``spawn``ed), ``ray`` (the Ray cluster ``ray.init()`` finds
or starts) and ``ray:ADDRESS`` (``ray.init(address=ADDRESS)``; ``auto`` for the cluster of the
environment, ``ray://HOST:PORT`` for Ray Client). Every executor runs a picklable
``fn(item)`` over a list of items and hands the results back to the driver as they finish;
nothing needs a shared file system. A task that raises stops the whole map with
:class:`TaskFailed`, which names the task's item (e.g. the configuration of a training run).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ._checks import check_int

__all__ = ["KINDS", "Executor", "LocalExecutor", "ProcessExecutor", "RayExecutor", "TaskFailed",
           "make", "resolve"]

KINDS = ("local", "processes:N", "ray", "ray:ADDRESS")
RAY_INSTALL = "pip install 'compsde[ray]'"
#: seconds the address of ``ray:HOST:PORT`` is given to accept a connection
CONNECT_TIMEOUT = 5.0


class TaskFailed(RuntimeError):
    """One task raised: ``index`` and ``item`` say which, ``reason`` what (one line)."""

    def __init__(self, index: int, item: Any, reason: str, details: str = ""):
        self.index, self.item, self.reason, self.details = index, item, reason, details
        super().__init__(f"task {index} failed ({describe_item(item)}): {reason}")


def describe_item(item: Any, limit: int = 400) -> str:
    """A short text of a task's item for error messages."""
    text = repr(dict(item)) if hasattr(item, "keys") else repr(item)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call(fn: Callable[[Any], Any], item: Any) -> tuple[bool, Any, float]:
    """Run ``fn(item)`` on a worker: ``(True, result, seconds)`` or ``(False, (reason,
    traceback), seconds)``, so every executor reports failures the same way."""
    started = time.perf_counter()
    try:
        result = fn(item)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return False, (reason, traceback.format_exc()), time.perf_counter() - started
    return True, result, time.perf_counter() - started


class Executor(ABC):
    """Runs ``fn`` over items; :meth:`imap` yields ``(index, result, seconds)`` as tasks end."""

    spec: str
    #: tasks that can run at the same time
    workers: int

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    @abstractmethod
    def _outcomes(self, fn: Callable[[Any], Any], items: Sequence[Any]
                  ) -> Iterator[tuple[int, tuple[bool, Any, float]]]:
        """``(index, _call(fn, item))`` in completion order."""

    def imap(self, fn: Callable[[Any], Any], items: Sequence[Any]
             ) -> Iterator[tuple[int, Any, float]]:
        """``(index, fn(items[index]), seconds)`` in completion order; raises
        :class:`TaskFailed` for the first task that raised (the others are cancelled)."""
        items = list(items)
        for index, (ok, value, seconds) in self._outcomes(fn, items):
            if not ok:
                reason, details = value
                raise TaskFailed(index, items[index], reason, details)
            yield index, value, seconds

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, progress: bool = False,
            desc: str = "tasks") -> list[Any]:
        """``[fn(item) for item in items]`` in item order, with one progress bar (done/total,
        time left) on the driver."""
        from tqdm.auto import tqdm

        items = list(items)
        results: list[Any] = [None] * len(items)
        with tqdm(total=len(items), desc=desc, disable=not progress, leave=False) as bar:
            for index, value, _ in self.imap(fn, items):
                results[index] = value
                bar.update(1)
        return results


class LocalExecutor(Executor):
    """Every task in this process, in item order."""

    spec = "local"
    workers = 1

    def _outcomes(self, fn, items):
        for index, item in enumerate(items):
            yield index, _call(fn, item)


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class ProcessExecutor(Executor):
    """``workers`` spawned processes of this machine, each with ``cores / workers`` intra-op
    threads (at least one) so that the workers do not oversubscribe the cores."""

    def __init__(self, workers: int):
        self.workers = check_int("workers", workers, minimum=1)
        self.spec = f"processes:{self.workers}"

    def _outcomes(self, fn, items):
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        if not items:
            return
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(items)),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_limit_threads, initargs=(threads,))
        previous = _exit_on_sigterm()
        try:
            futures = {pool.submit(_call, fn, item): i for i, item in enumerate(items)}
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    yield futures.pop(future), future.result()
        except BaseException:  # a failure, an interrupt or the caller stopping early
            _stop(pool)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        pool.shutdown(wait=True)


def _exit_on_sigterm() -> Any:
    """While workers run, SIGTERM (``kill``, ``timeout``) raises SystemExit(143) in the driver,
    so that it ends its workers before exiting instead of leaving them behind; returns the
    handler to restore (None off the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)
    return signal.signal(signal.SIGTERM, terminate)


def _stop(pool: Any) -> None:
    """End ``pool`` now: pending tasks cancelled and the workers terminated (their running
    tasks' results are not wanted), so an interrupted driver does not wait for them."""
    workers = list(getattr(pool, "_processes", {}).values())  # no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        if process.is_alive():
            process.terminate()
    for process in workers:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(f"executor 'ray' needs Ray, which is not installed: {RAY_INSTALL}"
                         ) from None
    return ray


class RayExecutor(Executor):
    """One Ray task per item on the cluster at ``address`` (connected on first use).

    If Ray is already initialised in this process (e.g. ``ray.init(num_cpus=2)`` by the
    caller) that cluster is used as it is. Results come back to the driver through Ray's object
    store. ``timeout`` (seconds, None = none) bounds the wait for the next task to finish.
    """

    def __init__(self, address: str | None = None, timeout: float | None = None,
                 gpus: float = 0):
        self.ray = _import_ray()
        self.address = address or None
        self.timeout = timeout
        self.gpus = gpus
        self.spec = "ray" if self.address is None else f"ray:{self.address}"

    def with_gpus(self, gpus: float) -> RayExecutor:
        """The same cluster, each task asking Ray for ``gpus`` GPUs (Ray then sets
        ``CUDA_VISIBLE_DEVICES`` of the task to the GPU it got)."""
        return RayExecutor(self.address, self.timeout, gpus)

    def connect(self) -> Any:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=False)
            except (ConnectionError, RuntimeError) as exc:
                where = self.address or "the environment's cluster (or a new local one)"
                raise ValueError(f"executor {self.spec!r}: cannot connect to Ray at {where}: "
                                 f"{exc}".splitlines()[0]) from None
        return ray

    @property
    def workers(self) -> int:  # type: ignore[override]
        return max(1, int(self.connect().cluster_resources().get("CPU", 1)))

    def _outcomes(self, fn, items):
        ray = self.connect()
        task = ray.remote(num_cpus=1, num_gpus=self.gpus, max_retries=0)(_call)
        fn_ref = ray.put(fn)
        refs = {task.remote(fn_ref, item): i for i, item in enumerate(items)}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=self.timeout)
                if not done:
                    raise TimeoutError(f"executor {self.spec!r}: no task finished within "
                                       f"{self.timeout:g} s")
                ref = done[0]
                index = refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the worker died or Ray failed the task itself
                    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    outcome = (False, (reason, str(exc)), 0.0)
                yield index, outcome
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)


def make(spec: str) -> Executor:
    """An executor from its spec: ``local``, ``processes:N``, ``ray`` or ``ray:ADDRESS``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"executor must be one of {' | '.join(KINDS)}, got {spec!r}")
    head, _, rest = spec.strip().partition(":")
    if head == "local" and not rest:
        return LocalExecutor()
    if head == "processes":
        try:
            count = int(rest)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"executor processes:N needs a whole number N >= 1, got {spec!r}")
        return ProcessExecutor(count)
    if head == "ray":
        chosen = RayExecutor(rest or None)  # says how to install Ray where it is missing
        if rest:
            check_reachable(rest, spec)
        return chosen
    raise ValueError(f"executor must be one of {' | '.join(KINDS)}, got {spec!r}")


def check_reachable(address: str, spec: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """For ``HOST:PORT`` or ``ray://HOST:PORT``: a TCP connection must open within ``timeout``
    seconds (ValueError naming the executor otherwise), so a wrong address fails before any
    work instead of Ray retrying it for minutes. ``auto`` and ``local`` are not checked."""
    target = address.removeprefix("ray://")
    host, _, port_text = target.rpartition(":")
    if address in ("auto", "local"):
        return
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise ValueError(f"executor {spec!r}: ADDRESS must be HOST:PORT (port 1-65535), "
                         f"ray://HOST:PORT or auto, got {address!r}")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror:
        raise ValueError(f"executor {spec!r}: the host {host!r} cannot be resolved") from None
    except OSError as exc:
        reason = (f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError)
                  else (exc.strerror or str(exc)).lower())
        raise ValueError(f"executor {spec!r}: nothing accepts connections at {host}:{port} "
                         f"({reason}); start the Ray head there or check the address"
                         ) from None


def resolve(executor: Executor | str | None, jobs: int = 1) -> Executor:
    """``executor`` as an Executor; None means ``processes:jobs`` for ``jobs > 1``, else local.

    ``jobs`` is the shorthand of ``processes:N``; both at once must agree.
    """
    jobs = check_int("jobs", jobs, minimum=1)
    if executor is None:
        return ProcessExecutor(jobs) if jobs > 1 else LocalExecutor()
    chosen = executor if isinstance(executor, Executor) else make(executor)
    if jobs > 1 and chosen.spec != f"processes:{jobs}":
        raise ValueError(f"jobs={jobs} is the shorthand of executor processes:{jobs}; got "
                         f"executor {chosen.spec!r} as well (give one of them)")
    return chosen
