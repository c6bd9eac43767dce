"""``compsde simulate``: Monte-Carlo runs of the discrete algorithm."""

from __future__ import annotations

from pathlib import Path

import click

from ..limits import check_duration, least_seconds
from ..noise import BATCH_NOISE
from ..plotting import plot_losses, readable_spec, run_title
from ..simulation import simulate
from .common import (
    check_run_time,
    default_record_every,
    executor_option,
    jobs_option,
    local_workers,
    parse_executor,
    parse_x0,
    prepare_out,
    problem_options,
    time_flag,
)


@click.command("simulate")
@problem_options("results/simulate")
@executor_option
@jobs_option
@click.option("--batch-noise", "batch_noise", default="scale", show_default=True,
              type=click.Choice(BATCH_NOISE),
              help="how a batch of B is drawn: scale (one draw at σ/√B, the convention) or "
                   "mean (the mean of B draws at σ)")
def simulate_command(method: str, landscape: str, noise: str, lr: float, lr_schedule: str,
                     agents: int, batch: int, steps: int, runs: int, seed: int, dtype: str,
                     x0: str, record_every: int | None, device: str, out: Path,
                     allow_long: bool, plot: bool, progress: bool, executor: str, jobs: int,
                     batch_noise: str) -> None:
    """Simulate the discrete algorithm over --runs Monte-Carlo paths; writes result.json."""
    chosen = parse_executor(executor, jobs)
    start = parse_x0(x0)
    flag, value = time_flag(steps, {"--runs": runs, "--agents": agents})
    check_duration(flag, value, least_seconds(steps, max(runs, 1) * max(agents, 1)),
                   allow=allow_long)
    prepare_out(out, files=["result.json", "loss.png"] if plot else ["result.json"])

    def probe(k: int) -> None:  # the same run, cut to its first k steps, in this process
        simulate(method, landscape, noise, lr=lr, steps=k, agents=agents, batch=batch,
                 runs=runs, seed=seed, x0=start, dtype=dtype, device=device, record_every=k,
                 lr_schedule=lr_schedule, batch_noise=batch_noise)
    check_run_time(flag, value, steps, max(runs, 1) * max(agents, 1), allow=allow_long,
                   probe=probe, workers=local_workers(chosen))
    result = simulate(method, landscape, noise, lr=lr, steps=steps, agents=agents, batch=batch,
                      runs=runs, seed=seed, x0=start, dtype=dtype, device=device,
                      record_every=default_record_every(steps, record_every),
                      lr_schedule=lr_schedule, progress=progress, executor=chosen,
                      batch_noise=batch_noise)
    path = result.save(out)
    click.echo(f"{result.config['method']} on {result.config['landscape']}, "
               f"noise {result.config['noise']}: final loss mean {result.loss_mean[-1]:.4g} "
               f"(5–95 %: {result.loss_q05[-1]:.3g}–{result.loss_q95[-1]:.3g}), "
               f"diverged {result.diverged_fraction:.0%} of {runs} runs")
    click.echo(f"wrote {path}")
    if plot:
        png = plot_losses([(readable_spec(result.config["method"]), result)], out / "loss.png",
                          title=run_title("simulation", result.config))
        click.echo(f"wrote {png}")
