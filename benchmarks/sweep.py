"""One training sweep on three executors, wall time side by side, and Ray's cost per task.

The sweep: ``--runs`` training runs of the MLP on synthetic data (DSGD and DSignSGD, N = 2
agents simulated in one process, ``--steps`` steps each), computed by
``compsde.experiments.cache.run_sweep`` into a fresh cache on ``local``, ``processes:2`` and
``ray`` (a local Ray cluster with 2 CPUs, started once; its start-up time is reported apart).
Ray's overhead per task is the wall time of ``--tiny`` trivial tasks on Ray minus the same
tasks run locally, per task.

    python benchmarks/sweep.py [--runs 8] [--steps 300] [--tiny 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import print_table, save
from compsde.executors import make
from compsde.experiments.cache import RunCache, run_sweep
from compsde.experiments.deep import TrainSpec
from compsde.experiments.deep_figure import local_compute

EXECUTORS = ("local", "processes:2", "ray")


def configs(runs: int, steps: int) -> list[dict]:
    methods = ("dsgd", "dsignsgd")
    return [TrainSpec(model="mlp", data="synthetic", method=methods[i % 2], lr=0.05, batch=32,
                      agents=2, steps=steps, seed=i, eval_every=steps, eval_size=256).config()
            for i in range(runs)]


def timed_sweep(spec: str, items: list[dict], folder: Path) -> float:
    started = time.perf_counter()
    outcome = run_sweep(items, local_compute("cpu"), RunCache(folder), executor=spec)
    assert len(outcome.computed) == len(items)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tiny", type=int, default=200)
    args = parser.parse_args()
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    make("ray").map(abs, [-1, -2])  # workers up before timing
    items = configs(args.runs, args.steps)
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in EXECUTORS:
            walls[spec] = timed_sweep(spec, items, Path(tmp) / spec.replace(":", "-"))
    tiny = list(range(args.tiny))
    t0 = time.perf_counter()
    make("local").map(abs, tiny)
    local_tiny = time.perf_counter() - t0
    t0 = time.perf_counter()
    make("ray").map(abs, tiny)
    ray_tiny = time.perf_counter() - t0
    per_task_ms = (ray_tiny - local_tiny) / args.tiny * 1e3
    ray.shutdown()
    rows = [[spec, f"{walls[spec]:.1f}", f"{walls['local'] / walls[spec]:.2f}×"]
            for spec in EXECUTORS]
    print_table(["executor", f"wall s ({args.runs} runs × {args.steps} steps)",
                 "speed-up vs local"], rows)
    print(f"ray overhead per task: {per_task_ms:.2f} ms ({args.tiny} trivial tasks); "
          f"ray.init(num_cpus=2): {ray_start:.1f} s (not in the sweep times)")
    path = save("sweep", {"runs": args.runs, "steps": args.steps, "wall_seconds": walls,
                          "ray_overhead_ms_per_task": per_task_ms, "ray_init_seconds": ray_start,
                          "tiny_tasks": args.tiny})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
