"""``compsde advise``: measure a model's gradient noise and recommend a compressor (§3–6)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
import torch

from .._checks import check_device, check_float, check_int
from ..advise import advise, parse_bandwidth, parse_duration, parse_latency, save, table
from ..advise.model import measure_dataset
from ..advise.verify import DEFAULT_STEPS, check_steps, plan, verify_lines
from ..advise.verify import verify as run_verify
from ..advise.verify_plot import plot as plot_verify
from ..diagnose.batch_law import samples_needed
from ..diagnose.batch_law_check import judge as judge_batch_law
from ..diagnose.batch_law_check import lines as batch_law_lines
from ..diagnose.measure import DEFAULT_COMPRESSORS
from ..io import versions
from ..limits import check_duration, least_seconds
from ..nn.data import check_data
from .common import OUT_DIR, prepare_out

FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # the model's parameters are float32
LAW_PAIRS = 4000   # pairs of batch means per point of the simulated batch-law check (~5 s)


@click.command("advise")
@click.option("--model", default="mlp", show_default=True,
              help="mlp[:hidden=256/128] | resnet[:depth=8] | vit[:dim=64,...] | "
                   "gpt[:size=tiny|small|gpu] (compsde.nn)")
@click.option("--data", default="fashion-mnist", show_default=True,
              help="fashion-mnist | digits | mnist-subset | cifar10:path=DIR | synthetic | "
                   "text[:path=FILE,tokens=word|char] (for gpt)")
@click.option("--batch", type=int, default=128, show_default=True, help="per-agent batch B")
@click.option("--agents", type=int, default=4, show_default=True, help="agents N")
@click.option("--lr", type=float, default=0.05, show_default=True,
              help="DSGD learning rate η (also used for the warm-up)")
@click.option("--bandwidth", default=None,
              help="link bandwidth, e.g. 1gbit, 10gbit, 1.5GB/s (omit: communication free)")
@click.option("--latency", default="50us", show_default=True,
              help="per-message latency of the alpha-beta model, e.g. 50us, 0.2ms")
@click.option("--compute-time", default=None,
              help="time of one forward+backward at batch B, e.g. 6ms (default: measured)")
@click.option("--codec-time", type=click.Choice(["measure", "none"]), default="measure",
              show_default=True,
              help="count each method's encode + decode time per step, timed here on the "
                   "hooks' own codecs (none: leave it out)")
@click.option("--compressor", "compressors", multiple=True,
              help=f"DCSGD candidate (repeatable); default {', '.join(DEFAULT_COMPRESSORS)}")
@click.option("--samples", type=int, default=64, show_default=True,
              help="mini-batch gradients measured M")
@click.option("--warmup", type=int, default=200, show_default=True,
              help="plain SGD steps before measuring")
@click.option("--curvature-batch", type=int, default=1024, show_default=True,
              help="examples in the Hessian-vector products for L")
@click.option("--inject", default=None,
              help="add this noise to every gradient, e.g. student-t:nu=1,scale=0.01 (what-if)")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of the model's initialisation, the batches and the compressors")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda[:i] for the model")
@click.option("--threads", type=int, default=None,
              help="torch intra-op threads (default: torch's choice; 1 is faster on a busy "
                   "machine, the tensors here are small)")
@click.option("--verify", "verify_steps", type=int, default=None, is_flag=False,
              flag_value=DEFAULT_STEPS,
              help=f"after recommending, run DSGD and the recommended configuration for STEPS "
                   f"steps (simulated agents, from the measured point) and judge the claim and "
                   f"the time model; exit 1 if one fails (bare --verify: {DEFAULT_STEPS})")
@click.option("--verify-method", "verify_methods", multiple=True,
              help="with --verify: which recommended configuration(s) to run (the "
                   "recommendation, or a method the table matches to the reference loss; "
                   "default: the recommendation)")
@click.option("--launcher", type=click.Choice(["inprocess", "torchrun"]), default="inprocess",
              show_default=True,
              help="with --verify: the agents simulated in this process, or real ranks under "
                   "torchrun (one process per agent, the DDP hook; the time model is then not "
                   "judged: the ranks talk over this machine's loopback)")
@click.option("--json", "as_json", is_flag=True, help="print result.json instead of the table")
@click.option("--out", type=OUT_DIR,
              default=Path("results/advise"), show_default=True,
              help="folder for result.json and advise.png; checked before the measurement")
def advise_command(model: str, data: str, batch: int, agents: int, lr: float,
                   bandwidth: str | None, latency: str, compute_time: str | None,
                   codec_time: str, compressors: tuple[str, ...],
                   samples: int, warmup: int, curvature_batch: int, inject: str | None,
                   seed: int, device: str, threads: int | None,
                   verify_steps: int | None, verify_methods: tuple[str, ...], launcher: str,
                   as_json: bool, out: Path) -> None:
    """Measure gradient noise (tail ν, SNR, phases, ω, L) and predict DSGD/DCSGD/DSignSGD."""
    started = time.perf_counter()
    if threads is not None:
        check_int("--threads", threads, minimum=1, maximum=os.cpu_count() or 1)
    check_float("--lr", lr, low=0, low_open=True, high=FLOAT32_MAX)
    if curvature_batch < 1:
        raise ValueError(f"--curvature-batch must be an integer >= 1 (the examples of the "
                         f"Hessian-vector products that measure L), got {curvature_batch}")
    check_duration("--warmup", warmup, least_seconds(warmup), allow_flag="")
    rate = parse_bandwidth(bandwidth) if bandwidth is not None else None
    lat = parse_latency(latency)
    compute = parse_duration(compute_time, "compute-time") if compute_time else None
    if agents < 1:
        raise ValueError(f"--agents must be an integer >= 1, got {agents}")
    check_device(device, "--device")
    specs = list(compressors) or list(DEFAULT_COMPRESSORS)
    _check_verify(verify_steps, verify_methods, specs, samples)
    if launcher != "inprocess":
        if verify_steps is None:
            raise ValueError("--launcher needs --verify STEPS (it says how --verify runs)")
        from ..advise.verify_torchrun import torchrun_path

        torchrun_path()
    check_data([data])                     # a missing data set: its install command, exit 2
    prepare_out(out, files=["result.json", "advise.png"]
                + (["verify.png"] if verify_steps is not None else []))
    if threads is not None:
        torch.set_num_threads(threads)
    measured = measure_dataset(model, data, batch=batch, lr=lr, samples=samples,
                               warmup=warmup, curvature_batch=curvature_batch,
                               inject=inject, seed=seed, compressors=specs, device=device,
                               return_model=True)
    measurement, net, dataset = measured
    result = advise(measurement, lr=lr, agents=agents, bandwidth=rate, latency=lat,
                    compute_seconds=compute,
                    codec_seconds=None if codec_time == "none" else "measure")
    seconds = time.perf_counter() - started
    extra = {"command": {"model": model, "data": data, "batch": batch, "agents": agents,
                         "lr": lr, "bandwidth": bandwidth, "latency": latency,
                         "compute_time": compute_time, "codec_time": codec_time,
                         "compressors": specs, "samples": samples, "warmup": warmup,
                         "curvature_batch": curvature_batch, "inject": inject, "seed": seed,
                         "device": device, "threads": threads, "verify": verify_steps,
                         "verify_methods": list(verify_methods), "launcher": launcher},
             "seconds": seconds, "versions": versions()}
    if verify_steps is not None:      # a method that was not recommended: exit 2, no run
        arms = plan(result, list(verify_methods) or None)
    json_path, png_path = save(result, out, extra)
    if verify_steps is None:
        if as_json:
            click.echo(json_path.read_text(), nl=False)
            return
        click.echo(table(result))
        click.echo(f"wrote {json_path} and {png_path} ({seconds:.1f} s)")
        return
    if not as_json:
        click.echo(table(result))

    def before_runs(fixed: dict) -> None:    # the bands, in result.json before any step
        save(result, out, {**extra, "verify": {**fixed, "status": "running"}})

    outcome = run_verify(result, net, dataset, verify_steps, seed=seed,
                         methods=[a.spec for a in arms[1:]], device=device,
                         before_runs=before_runs, inject=inject, launcher=launcher,
                         model_spec=model, data_spec=data)
    arms_, runs, start = outcome.pop("_internal")
    law_check = judge_batch_law(pairs=LAW_PAIRS, seed=seed)   # the law the rules assume
    outcome["batch_law_simulation"] = law_check
    if law_check["verdict"] != "pass":
        outcome["verdict"] = "fail"
    verify_png = plot_verify(arms_, runs, outcome["recommendations"], start, out / "verify.png")
    extra["seconds"] = time.perf_counter() - started
    json_path, png_path = save(result, out, {**extra, "verify": outcome})
    if as_json:
        click.echo(json_path.read_text(), nl=False)
    else:
        click.echo(verify_lines(outcome))
        click.echo(batch_law_lines(law_check))
        click.echo(f"wrote {json_path}, {png_path} and {verify_png} "
                   f"({extra['seconds']:.1f} s)")
    if outcome["verdict"] == "fail":
        raise SystemExit(1)


def _check_verify(steps: int | None, methods: tuple[str, ...], specs: list[str],
                  samples: int) -> None:
    """``--verify`` and ``--verify-method`` before any work (one line, exit 2)."""
    if steps is None:
        if methods:
            raise ValueError("--verify-method needs --verify STEPS")
        return
    check_steps(steps)
    need = samples_needed()
    if samples < need:
        raise ValueError(f"--samples must be at least {need} with --verify: the rules it judges "
                         f"use the batch law, measured from means of 1, 4 and 16 mini-batches "
                         f"(two pairs at 16B); got {samples}")
    from .. import compressors as comp_module

    known = {"dsgd", "dsignsgd", *(f"dcsgd:{comp_module.make(s).spec}" for s in specs)}
    for m in methods:
        if m not in known:
            raise ValueError(f"--verify-method must be a method the advisor assesses "
                             f"({', '.join(sorted(known))}), got {m!r}")
