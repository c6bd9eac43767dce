"""Benchmark of the SDE integrator (``compsde.sde.simulate_sde``) on the DSignSGD Gaussian SDE.

Config: quadratic ``½‖x‖²`` with d = 100, R = 500 paths, N = 4 agents, Gaussian noise σ = 1,
η = 0.01, 1000 steps (dt = η), float64, loss recorded every 10 steps. Side by side in one run,
interleaved round-robin so machine noise hits every row alike:

- ours: ``simulate_sde`` (batched Euler–Maruyama, closed-form erf moments);
- baseline: ``torchsde.sdeint(method="euler")`` (default Brownian motion) on the same drift and
  diagonal diffusion (``dX = −mean_i erf(∇f/(√2σ_i)) dt + √(η/N) √(1 − mean_i erf²) dW``),
  written from the formula with ``f_and_g`` (one evaluation per step), same dt and records;
- torchsde driving compsde's own model code (same drift/diffusion evaluation as ours: the
  difference is the integrator alone);
- the discrete algorithm: ``compsde.simulate`` on the same config (one step = one iteration);
- the floor: drawing the same (R, d) standard normals 1000 times, with ``torch.randn`` and with
  the integrator's own sampler (NumPy PCG64 seeded from the torch generator).

Targets (issue 3): ours ≥ 10× faster than torchsde; one SDE step ≤ 2× one simulator step.

    python benchmarks/sde.py [--repeats 5] [--runs 500] [--d 100] [--steps 1000] [--threads T]
"""

from __future__ import annotations

import argparse
import math

import torch
import torchsde

from _common import interleaved, print_table, save
from compsde.problem import Problem
from compsde.sde import sde_model, simulate_sde
from compsde.sde.integrate import NormalStream
from compsde.simulation import simulate


class SignSDE(torch.nn.Module):
    """DSignSGD's Gaussian SDE on ½‖x‖² in torchsde's interface (Itô, diagonal noise)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sigma: torch.Tensor, lr: float, agents: int):
        super().__init__()
        self.inv = 1.0 / (math.sqrt(2.0) * sigma)            # (agents, d)
        self.factor = math.sqrt(lr / agents)

    def f_and_g(self, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and diffusion from one evaluation of the per-agent sign means (∇f = y)."""
        m = torch.erf(y.unsqueeze(-2) * self.inv)
        return -m.mean(-2), (1.0 - (m * m).mean(-2)).clamp_min(0.0).sqrt() * self.factor

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.f_and_g(t, y)[0]

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.f_and_g(t, y)[1]


class ModelSDE(torch.nn.Module):
    """torchsde driving compsde's own model (``sde_model(...).evaluate``): identical drift and
    diffusion code, so the difference to ``simulate_sde`` is the integrator alone."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, problem: Problem):
        super().__init__()
        self.model = sde_model(problem)
        self.lr = problem.lr
        self.factor = math.sqrt(self.model.noise_scale(problem.lr))

    def f_and_g(self, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        drift, cov = self.model.evaluate(y, self.lr)
        return drift, cov.diagonal().clamp_min(0.0).sqrt() * self.factor

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.f_and_g(t, y)[0]

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.f_and_g(t, y)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 avoids "
                             "thread thrashing on a busy machine")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    runs, d, n, steps, lr = args.runs, args.d, args.agents, args.steps, args.lr
    record_every = 10
    common = dict(landscape=f"quadratic:d={d}", noise="gaussian:scale=1", lr=lr, steps=steps,
                  agents=n, runs=runs, seed=0, record_every=record_every, dtype="float64")

    sigma = torch.ones(n, d, dtype=torch.float64)
    sde = SignSDE(sigma, lr, n)
    y0 = torch.ones(runs, d, dtype=torch.float64)
    ts = torch.arange(0, steps + 1, record_every, dtype=torch.float64) * lr

    same_model = ModelSDE(Problem("dsignsgd", common["landscape"], common["noise"], lr=lr,
                                  agents=n))

    def run_torchsde(system: torch.nn.Module) -> None:
        with torch.no_grad():
            ys = torchsde.sdeint(system, y0, ts, method="euler", dt=lr)
            0.5 * (ys * ys).sum(-1)                            # the same recorded losses

    generator = torch.Generator().manual_seed(0)

    def floor() -> None:
        for _ in range(steps):
            torch.randn((runs, d), generator=generator, dtype=torch.float64)

    def floor_ours() -> None:
        stream = NormalStream(generator, torch.float64, torch.device("cpu"))
        for _ in range(steps):
            stream.draw((runs, d))

    cases = {
        "ours: simulate_sde": lambda: simulate_sde("dsignsgd", **common),
        "torchsde sdeint euler": lambda: run_torchsde(sde),
        "torchsde on our model": lambda: run_torchsde(same_model),
        "discrete: simulate": lambda: simulate("dsignsgd", **common),
        "floor: torch.randn of the normals": floor,
        "floor: our sampler (NumPy PCG64)": floor_ours,
    }
    times = interleaved(cases, args.repeats)
    ours = times["ours: simulate_sde"]
    ratios = {
        "torchsde / ours (target >= 10)": times["torchsde sdeint euler"] / ours,
        "torchsde on our model / ours": times["torchsde on our model"] / ours,
        "ours / discrete step (target <= 2)": ours / times["discrete: simulate"],
        "ours / floor (our sampler)": ours / times["floor: our sampler (NumPy PCG64)"],
    }
    rows = [[name, f"{t:.3f}", f"{1e6 * t / steps:.1f}"] for name, t in times.items()]
    print(f"DSignSGD Gaussian SDE: R={runs}, d={d}, N={n}, {steps} steps, dt=lr={lr}, float64, "
          f"torch threads {torch.get_num_threads()}")
    print_table(["case", "seconds", "us/step"], rows)
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    path = save("sde", {"config": {"runs": runs, "d": d, "agents": n, "steps": steps, "lr": lr,
                                   "record_every": record_every, "dtype": "float64",
                                   "repeats": args.repeats,
                                   "threads": torch.get_num_threads()},
                        "seconds": times, "ratios": ratios,
                        "targets": {"torchsde_over_ours_min": 10.0,
                                    "ours_over_discrete_max": 2.0},
                        "pass": ratios["torchsde / ours (target >= 10)"] >= 10.0
                        and ratios["ours / discrete step (target <= 2)"] <= 2.0})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
