"""``compsde reproduce fig2|fig4 --distributed``: the same runs, one torchrun rank per agent.

Each run launches ``python -m torch.distributed.run --standalone --nproc-per-node N -m
compsde.distributed.train`` (DDP + the compsde communication hook, THEORY.md §2) with the run's
model, data, method, lr, per-rank batch B, steps and seed, Rand-k coordinates drawn
independently per rank (as the theory assumes), and the injected noise passed as
``gaussian:scale=σ/√B`` (the trainer applies its scale as given). Differences from the
simulated runs of :mod:`.deep`, all due to the trainer: ranks walk disjoint shards of the whole
training split (no ``train_size`` subset, no ``image_size`` downsampling), and the recorded
training loss is the mean over ranks of the mini-batch losses, averaged over each window of
``eval_every`` steps (instead of the loss on a fixed subset). Results are cached under their
own keys (``backend: torchrun``), never mixed with simulated ones.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .deep import TAIL, TRAIN_VERSION, TrainSpec

BACKEND = "torchrun"


def torchrun_key() -> dict[str, Any]:
    """Extra cache-key fields that keep torchrun results apart from simulated ones."""
    return {"backend": BACKEND, "backend_version": TRAIN_VERSION}


def command(spec: TrainSpec, out: str, device: str = "cpu") -> list[str]:
    """The torchrun command line of ``spec`` (module docstring)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={spec.agents}", "-m", "compsde.distributed.train",
           "--model", spec.model, "--data", spec.data, "--method", spec.method,
           "--lr", repr(spec.lr), "--batch", str(spec.batch), "--steps", str(spec.steps),
           "--seed", str(spec.seed), "--randomness", "independent",
           "--log-every", str(spec.eval_every), "--device", device, "--out", out,
           "--no-progress"]
    if spec.noise > 0:
        law = f"student-t:nu={spec.noise_nu!r}," if spec.noise_nu else "gaussian:"
        cmd += ["--noise", f"{law}scale={spec.noise / math.sqrt(spec.batch)!r}"]
    return cmd


def windowed(losses: list[float], steps: int, every: int) -> tuple[list[int], list[float]]:
    """Records at 0, every, 2·every, …, steps: the loss at step 0, then the mean of each window
    of ``every`` per-step losses ending at the record."""
    marks = sorted(set(range(0, steps + 1, every)) | {steps})
    values = [float(losses[0])]
    for lo, hi in itertools.pairwise(marks):
        values.append(float(np.mean(losses[lo:hi])))
    return marks, values


def run_torchrun(spec: TrainSpec, *, device: str = "cpu", timeout: float | None = None
                 ) -> dict[str, Any]:
    """Train ``spec`` with torchrun and return a result shaped like :func:`.deep.train`'s."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="compsde-torchrun-") as out:
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1)
                                                       // spec.agents)))
        proc = subprocess.run(command(spec, out, device), capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
        path = os.path.join(out, "result.json")
        if proc.returncode != 0 or not os.path.isfile(path):
            text = proc.stderr.strip().splitlines()
            errors = [line for line in text if "error" in line.lower()] or text[-1:] or ["?"]
            if any("non-finite" in line for line in text):
                return {"steps": [0], "loss": [None], "diverged": True, "final_loss": None,
                        "backend": BACKEND, "seconds": time.perf_counter() - started}
            raise RuntimeError(f"torchrun run failed (exit {proc.returncode}): {errors[-1]}")
        with open(path) as handle:
            summary = json.load(handle)
    losses = summary["loss"]
    steps, values = windowed(losses, spec.steps, spec.eval_every)
    finite = all(math.isfinite(v) for v in values)
    tail = values[-max(1, round(len(values) * TAIL)):]
    return {"steps": steps, "loss": values if finite else [v if math.isfinite(v) else None
                                                          for v in values],
            "final_loss": float(np.mean(tail)) if finite else None, "diverged": not finite,
            "dimension": summary.get("parameters"), "backend": BACKEND,
            "world": summary.get("world"), "bytes": summary.get("bytes"),
            "test_accuracy": summary.get("test_accuracy"),
            "seconds": time.perf_counter() - started}


def torchrun_config(config: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Train the run of a cached config (with the torchrun key fields) with torchrun."""
    plain = {k: v for k, v in config.items() if k not in torchrun_key()}
    return run_torchrun(TrainSpec.from_config(plain), device=device)


def torchrun_compute(device: str, progress: bool = False
                     ) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A sweep ``compute`` that runs each config with torchrun (picklable)."""
    return functools.partial(torchrun_config, device=device)
