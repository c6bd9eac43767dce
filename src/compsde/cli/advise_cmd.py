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
from ..diagnose.measure import DEFAULT_COMPRESSORS
from ..io import versions
from ..limits import check_duration, least_seconds
from ..nn.data import check_data
from .common import OUT_DIR, prepare_out

FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # the model's parameters are float32


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
@click.option("--json", "as_json", is_flag=True, help="print result.json instead of the table")
@click.option("--out", type=OUT_DIR,
              default=Path("results/advise"), show_default=True,
              help="folder for result.json and advise.png; checked before the measurement")
def advise_command(model: str, data: str, batch: int, agents: int, lr: float,
                   bandwidth: str | None, latency: str, compute_time: str | None,
                   codec_time: str, compressors: tuple[str, ...],
                   samples: int, warmup: int, curvature_batch: int, inject: str | None,
                   seed: int, device: str, threads: int | None, as_json: bool,
                   out: Path) -> None:
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
    check_data([data])                     # a missing data set: its install command, exit 2
    prepare_out(out, files=["result.json", "advise.png"])
    if threads is not None:
        torch.set_num_threads(threads)
    measurement = measure_dataset(model, data, batch=batch, lr=lr, samples=samples,
                                  warmup=warmup, curvature_batch=curvature_batch,
                                  inject=inject, seed=seed, compressors=specs, device=device)
    result = advise(measurement, lr=lr, agents=agents, bandwidth=rate, latency=lat,
                    compute_seconds=compute,
                    codec_seconds=None if codec_time == "none" else "measure")
    seconds = time.perf_counter() - started
    extra = {"command": {"model": model, "data": data, "batch": batch, "agents": agents,
                         "lr": lr, "bandwidth": bandwidth, "latency": latency,
                         "compute_time": compute_time, "codec_time": codec_time,
                         "compressors": specs, "samples": samples, "warmup": warmup,
                         "curvature_batch": curvature_batch, "inject": inject, "seed": seed,
                         "device": device, "threads": threads},
             "seconds": seconds, "versions": versions()}
    json_path, png_path = save(result, out, extra)
    if as_json:
        click.echo(json_path.read_text(), nl=False)
        return
    click.echo(table(result))
    click.echo(f"wrote {json_path} and {png_path} ({seconds:.1f} s)")
