"""Benchmark of the batched Monte-Carlo simulator (issue targets in BENCHMARKS.md).

Time per step of ``compsde.simulate`` for DSGD, DCSGD (Rand-k, k = 100) and DSignSGD in float32
with R = 500 runs, N = 8 agents, d = 1000, against two references measured in the same run:
- the floor: drawing the same random numbers alone (the noise, plus Rand-k's selection keys);
- a straightforward loop over runs (one run at a time, same algorithm), timed on a few steps.

    python benchmarks/simulate.py [--steps 1000] [--loop-steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import median_time, print_table, save
from compsde import simulate
from compsde.landscapes import make as make_landscape
from compsde.methods import make as make_method
from compsde.noise import make as make_noise

R, N = 500, 8
SIZES = (1000, 10)  # the d, and a small d where per-run overhead dominates a loop
METHODS = {"dsgd": "dsgd", "dcsgd randk k=100": "dcsgd:randk:k=100", "dsignsgd": "dsignsgd"}
NOISE = "gaussian:scale=1"
DTYPE = torch.float32


def ours(spec: str, d: int, steps: int) -> float:
    """Seconds per step of compsde.simulate (one call of ``steps`` steps)."""
    started = time.perf_counter()
    simulate(spec, f"quadratic:d={d}", NOISE, lr=0.01, steps=steps, agents=N, runs=R, seed=0,
             dtype=DTYPE, record_every=steps)
    return (time.perf_counter() - started) / steps


def floor(spec: str, d: int, steps: int) -> float:
    """Only the random draws the simulator makes for this method, same shapes and generator."""
    generator = torch.Generator().manual_seed(0)
    noise = make_noise(NOISE)
    randk = spec.startswith("dcsgd:randk")

    def draws() -> None:
        for _ in range(steps):
            noise.sample((R, N, d), generator, dtype=DTYPE)
            if randk:
                k = int(spec.rsplit("=", 1)[1])
                torch.randint(0, d, (R * N, k), generator=generator)

    return median_time(draws, repeats=3) / steps


def loop(spec: str, d: int, steps: int) -> float:
    """One run at a time: the same algorithm without batching over runs."""
    method, landscape = make_method(spec), make_landscape(f"quadratic:d={d}")
    noise = make_noise(NOISE)
    generator = torch.Generator().manual_seed(0)

    def run_all() -> None:
        for _ in range(R):
            x = torch.ones(d, dtype=DTYPE)
            for _ in range(steps):
                grads = noise.sample((N, d), generator, dtype=DTYPE) + landscape.grad(x)
                x = x - 0.01 * method.messages(grads, generator).mean(dim=0)

    return median_time(run_all, repeats=1, warmup=0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--loop-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: no thread-pool barriers on small ops)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, records = [], []
    for d in SIZES:
        for label, spec in METHODS.items():
            if spec.startswith("dcsgd") and d <= 100:
                spec, label = "dcsgd:randk:k=1", "dcsgd randk k=1"
            t_ours = ours(spec, d, args.steps)
            t_floor = floor(spec, d, args.steps)
            t_loop = loop(spec, d, args.loop_steps)
            rows.append([d, label, f"{t_ours * 1e3:.3f}", f"{t_floor * 1e3:.3f}",
                         f"{t_loop * 1e3:.1f}", f"{t_ours / t_floor:.2f}x",
                         f"{t_loop / t_ours:.0f}x"])
            records.append({"d": d, "method": spec, "ms_per_step": t_ours * 1e3,
                            "floor_ms_per_step": t_floor * 1e3,
                            "loop_ms_per_step": t_loop * 1e3,
                            "ratio_to_floor": t_ours / t_floor,
                            "speedup_vs_loop": t_loop / t_ours})
    print(f"R={R} runs, N={N} agents, float32, {args.steps} steps, {args.threads} thread(s) "
          f"(loop timed on {args.loop_steps} steps)")
    print_table(["d", "method", "ours ms/step", "floor ms/step", "loop ms/step", "ours/floor",
                 "loop/ours"], rows)
    path = save("simulate", {"config": {"runs": R, "agents": N, "d": list(SIZES),
                                        "steps": args.steps, "threads": args.threads,
                                        "loop_steps": args.loop_steps, "dtype": "float32"},
                             "rows": records,
                             "targets": {"ratio_to_floor_max": 2.5, "speedup_vs_loop_min": 50}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
