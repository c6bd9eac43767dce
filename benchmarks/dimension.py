"""Cost of ``compsde.simulate`` per run·agent·coordinate·step from d = 10² to 10⁶.

DSGD, DCSGD (Rand-k, k = d/10) and DSignSGD on ``quadratic:d=D`` (kept as its eigenvalues)
with N = 4 agents and R·d held at ``--numbers`` random draws per step (R = numbers/(N d), at
least 2 runs), float64, one intra-op thread (as benchmarks/simulate.py: on a shared machine,
thread barriers otherwise dominate). All cases are timed in interleaved rounds, so load changes
hit every d alike; the target is max/min of the per-unit cost over d ≤ 1.5 for each method.

    python benchmarks/dimension.py [--steps 4] [--repeats 2] [--numbers 8000000]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import interleaved, print_table, save
from compsde import simulate

N = 4
DIMS = (10**2, 10**3, 10**4, 10**5, 10**6)
METHODS = {"DSGD": lambda d: "dsgd", "DCSGD Rand-k, k = d/10": lambda d: f"dcsgd:randk:k={d // 10}",
           "DSignSGD": lambda d: "dsignsgd"}
TARGET = 1.5


def case(method: str, d: int, runs: int, steps: int):
    def run() -> None:
        simulate(method, f"quadratic:d={d}", "gaussian:scale=1", lr=1e-3, steps=steps,
                 agents=N, runs=runs, seed=0, record_every=steps)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--numbers", type=int, default=8_000_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    runs = {d: max(2, args.numbers // (N * d)) for d in DIMS}
    cases = {(name, d): case(spec(d), d, runs[d], args.steps)
             for name, spec in METHODS.items() for d in DIMS}
    seconds = interleaved({f"{n}|{d}": fn for (n, d), fn in cases.items()}, args.repeats)
    rows, summary = [], {}
    for name in METHODS:
        per_unit = {d: seconds[f"{name}|{d}"] / (runs[d] * N * d * args.steps) * 1e9
                    for d in DIMS}
        ratio = max(per_unit.values()) / min(per_unit.values())
        summary[name] = {"ns_per_unit": per_unit, "max_over_min": ratio,
                         "within_target": ratio <= TARGET}
        for d in DIMS:
            rows.append([f"{d:.0e}", name, str(runs[d]), f"{per_unit[d]:.1f}",
                         f"{per_unit[d] / min(per_unit.values()):.2f}×"])
    print_table(["d", "method", "runs", "ns per run·agent·coord·step", "/ best d"], rows)
    for name, info in summary.items():
        print(f"{name}: max/min over d = {info['max_over_min']:.2f} (target ≤ {TARGET})")
    path = save("dimension", {"agents": N, "steps": args.steps, "repeats": args.repeats,
                              "numbers_per_step": args.numbers, "runs": runs,
                              "results": summary, "seconds": time.perf_counter() - started})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
