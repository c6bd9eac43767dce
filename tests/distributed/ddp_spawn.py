"""Launch N gloo ranks on localhost as subprocesses with a hard timeout (file:// rendezvous)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class RankResult:
    rank: int
    returncode: int | None
    stdout: str
    stderr: str


def rank_env(rank: int, world: int, init_file: Path, extra: dict[str, str] | None = None
             ) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(world), "COMPSDE_INIT_METHOD": f"file://{init_file}",
                "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
                "PYTHONWARNINGS": "ignore::FutureWarning"})
    env.update(extra or {})
    return env


def join_group(timeout_s: float = 60.0) -> tuple[int, int]:
    """In a rank started by :func:`start_ranks`: one intra-op thread, join the gloo group of
    :func:`rank_env`'s rendezvous; ``(rank, world)``."""
    import datetime

    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=os.environ["COMPSDE_INIT_METHOD"], rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    return rank, world


def refusals(attempts: dict) -> dict[str, str]:
    """In a rank: the ``ValueError`` message of every ``attempts[name]()`` that raised one."""
    found = {}
    for name, attempt in attempts.items():
        try:
            attempt()
        except ValueError as exc:
            found[name] = str(exc)
    return found


def start_ranks(argv: list[str], world: int, tmp: Path, extra: dict[str, str] | None = None
                ) -> list[subprocess.Popen]:
    """Start ``world`` processes of ``[python, *argv]`` with RANK/WORLD_SIZE set."""
    init_file = tmp / f"init-{time.monotonic_ns()}"
    return [subprocess.Popen([sys.executable, *argv], env=rank_env(r, world, init_file, extra),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(world)]


def wait_ranks(procs: list[subprocess.Popen], timeout: float) -> list[RankResult]:
    """Wait for every process up to ``timeout`` seconds in total; kill the stragglers."""
    deadline = time.monotonic() + timeout
    results = []
    for rank, proc in enumerate(procs):
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            results.append(RankResult(rank, None, out, err))
            continue
        results.append(RankResult(rank, proc.returncode, out, err))
    return results


def run_ranks(argv: list[str], world: int, tmp: Path, timeout: float = 120.0,
              extra: dict[str, str] | None = None) -> list[RankResult]:
    return wait_ranks(start_ranks(argv, world, tmp, extra), timeout)


def rank_records(worker: Path, world: int, out: Path, timeout: float) -> list:
    """Run ``worker OUT`` on ``world`` ranks, assert every rank exited 0, and load the
    ``OUT/rank{r}.pt`` each rank wrote."""
    import torch

    results = run_ranks([str(worker), str(out)], world, out, timeout=timeout)
    assert all(r.returncode == 0 for r in results), describe(results)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def describe(results: list[RankResult]) -> str:
    return "\n".join(f"--- rank {r.rank} rc={r.returncode}\n{r.stdout[-2000:]}\n"
                     f"{r.stderr[-4000:]}" for r in results)
