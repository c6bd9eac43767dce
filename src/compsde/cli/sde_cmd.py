"""``compsde sde``: Euler–Maruyama paths of a method's SDE, same flags and result.json as
``compsde simulate`` (THEORY.md §3)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..limits import check_duration, least_seconds
from ..plotting import plot_losses, readable_spec, run_title
from ..sde import simulate_sde
from ..sde.phases import PHASE_MODELS, phase_builder
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


@click.command("sde")
@problem_options("results/sde")
@executor_option
@jobs_option
@click.option("--dt", type=float, default=None,
              help="Euler–Maruyama step (default: lr, one SDE step per iteration; finer dt "
                   "takes ceil(lr/dt) sub-steps)")
@click.option("--model", default="full", show_default=True,
              type=click.Choice(["full", *PHASE_MODELS]),
              help="the full SDE, or a DSignSGD phase model")
@click.option("--moments", default="auto", show_default=True,
              type=click.Choice(["auto", "closed-form", "monte-carlo"]),
              help="message moments: closed forms where they exist, or Monte-Carlo estimates")
@click.option("--samples", type=int, default=32, show_default=True,
              help="noise draws per evaluation for Monte-Carlo moments")
@click.option("--stability/--no-stability", default=False, show_default=True,
              help="stability-corrected drift b + (lr/2) J_b b (THEORY.md §8)")
def sde_command(method: str, landscape: str, noise: str, lr: float, lr_schedule: str,
                agents: int, batch: int, steps: int, runs: int, seed: int, dtype: str,
                x0: str, record_every: int | None, device: str, out: Path,
                allow_long: bool, plot: bool, progress: bool, executor: str, jobs: int,
                dt: float | None, model: str, moments: str, samples: int,
                stability: bool) -> None:
    """Integrate the SDE of --method over --runs paths; writes result.json like simulate."""
    chosen = parse_executor(executor, jobs)
    start = parse_x0(x0)
    paths = max(runs, 1) * max(agents, 1)
    flag, value = time_flag(steps, {"--runs": runs, "--agents": agents})
    check_duration(flag, value, least_seconds(steps, paths), allow=allow_long)
    if dt is not None and dt > 0 and lr > 0 and not math.isfinite(lr / dt):
        raise ValueError(f"--dt {dt:g} is too small for --lr {lr:g}: ceil(lr/dt) sub-steps a "
                         f"step overflow; raise --dt")
    if dt is not None and dt > 0 and lr > 0:
        check_duration("--dt", f"{dt:g}", least_seconds(steps * (lr / dt), paths),
                       allow=allow_long, fix="raise --dt (ceil(lr/dt) sub-steps a step)")
    prepare_out(out, files=["result.json", "loss.png"] if plot else ["result.json"])
    builder = None if model == "full" else phase_builder(model)

    def probe(k: int) -> None:  # k Euler–Maruyama steps of the same SDE, in this process
        simulate_sde(method, landscape, noise, lr=lr, steps=k, agents=agents, batch=batch,
                     runs=runs, seed=seed, x0=start, dtype=dtype, device=device,
                     record_every=k, lr_schedule=lr_schedule, stability=stability,
                     moments=moments, samples=samples, model=builder)
    substeps = math.ceil(lr / dt) if dt is not None and dt > 0 and lr > 0 else 1
    check_run_time("--dt" if substeps > 1 else flag, f"{dt:g}" if substeps > 1 else value,
                   steps * substeps, paths, allow=allow_long, probe=probe,
                   workers=local_workers(chosen))
    result = simulate_sde(method, landscape, noise, lr=lr, steps=steps, agents=agents,
                          batch=batch, runs=runs, seed=seed, x0=start, dtype=dtype, device=device,
                          record_every=default_record_every(steps, record_every),
                          lr_schedule=lr_schedule, progress=progress, dt=dt,
                          stability=stability, moments=moments, samples=samples,
                          model=builder, executor=chosen)
    path = result.save(out)
    cfg = result.config
    click.echo(f"SDE ({cfg['model']}; moments: {cfg['moments']}) of {cfg['method']} on "
               f"{cfg['landscape']}, noise {cfg['noise']}, dt={cfg['dt']:.3g}: final loss mean "
               f"{result.loss_mean[-1]:.4g} (5–95 %: {result.loss_q05[-1]:.3g}–"
               f"{result.loss_q95[-1]:.3g}), diverged {result.diverged_fraction:.0%} of "
               f"{runs} paths")
    click.echo(f"wrote {path}")
    if plot:
        png = plot_losses([(f"SDE of {readable_spec(cfg['method'])}", result)], out / "loss.png",
                          title=run_title("SDE", cfg),
                          xlabel="step k (SDE time t = k·η)")
        click.echo(f"wrote {png}")
