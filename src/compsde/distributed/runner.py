"""The training loops behind ``compsde train``: torchrun ranks, or N simulated agents.

Both loops take the batch of rank ``r`` at step ``k`` from ``ShardSampler(seed, r)``, compute
the cross-entropy gradient, let the method combine the N gradients (the DDP hook or the
:class:`AgentSimulator`) and take a plain SGD step ``x ← x − η · mean_i m_i`` (THEORY.md §2).
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from ..io import versions, write_atomic, write_json
from ..nn.data import Dataset, ShardSampler, load_dataset
from ..nn.models import count_parameters, make_model
from ..progress import progress_bar
from . import fsdp
from .agents import AgentSimulator, ddp_layout
from .config import TrainConfig
from .hooks import HookState, prime_buckets
from .hsdp import HSDPState
from .register import register
from .report import plot_history

CHECKPOINT = "checkpoint.pt"


class RunFailed(RuntimeError):
    """The run cannot go on (a peer died, a timeout, a non-finite gradient)."""


@contextmanager
def guard(step: int, timeout: float | None):
    """Turn a failure inside a step into :class:`RunFailed` naming the step (``timeout``
    None: no collectives involved, only non-finite gradients are turned)."""
    try:
        yield
    except (ValueError, KeyboardInterrupt):
        raise
    except Exception as exc:
        text = str(exc)
        marker = text.find("non-finite gradient at step")
        if marker >= 0:
            raise RunFailed(text[marker:].splitlines()[0]) from None
        if timeout is None:
            raise
        first = next((line.strip() for line in text.splitlines() if line.strip()), repr(exc))
        raise RunFailed(f"a collective failed at step {step}: another rank died or did not "
                        f"answer within the process-group timeout ({timeout:g} s) "
                        f"[{type(exc).__name__}: {first[:300]}]") from None


def _threads(config: TrainConfig, local_world: int) -> None:
    count = config.threads or max(1, (os.cpu_count() or 1) // max(1, local_world))
    torch.set_num_threads(count)


def _checkpoint(out: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(out / CHECKPOINT, buffer.getvalue())


def _load_checkpoint(config: TrainConfig, world: int, device: torch.device) -> dict[str, Any]:
    path = Path(config.out) / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"resume: no checkpoint at {path}; run with --checkpoint-every K first")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    saved, wanted = {"parallel": "ddp", **ckpt["config"]}, config.run_key()  # older: DDP
    diff = [k for k in wanted if saved.get(k) != wanted[k]]
    if diff:
        raise ValueError("resume: the checkpoint was made with other settings ("
                         + ", ".join(f"{k}={saved.get(k)!r} vs {wanted[k]!r}" for k in diff)
                         + ")")
    if ckpt["world"] != world:
        raise ValueError(f"resume: the checkpoint was made with {ckpt['world']} ranks, not "
                         f"{world}")
    if ckpt["step"] > config.steps:
        raise ValueError(f"steps must be at least the checkpoint's step {ckpt['step']}, "
                         f"got {config.steps}")
    return ckpt


def evaluate(model: nn.Module, data: Dataset, device: torch.device, rank: int = 0,
             world: int = 1, reduce: bool = False) -> dict[str, float]:
    """Test loss and accuracy; with ``reduce`` each rank scores a shard and they allreduce."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    index = torch.arange(rank, len(data.y_test), world)
    per_rank = -(-len(data.y_test) // world)     # same chunk count on every rank (FSDP's
    with torch.no_grad():                        # forward is a collective)
        for start in range(0, per_rank, 1000):
            chunk = index[start:start + 1000]
            x = data._prepare(data.x_test[chunk], device)
            y = data.y_test[chunk].to(device)
            logits = model(x)
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 (logits.argmax(1) == y).sum().double(),
                                 torch.tensor(float(y.numel()), dtype=torch.float64,
                                              device=device)])
    if reduce:
        dist.all_reduce(sums)
    model.train(was_training)
    loss, correct, count = sums.tolist()
    return {"test_loss": loss / max(count, 1), "test_accuracy": correct / max(count, 1)}


class _History:
    def __init__(self, saved: dict[str, list] | None = None):
        saved = saved or {}
        self.steps: list[int] = list(saved.get("steps", []))
        self.loss: list[float] = list(saved.get("loss", []))
        self.evals: list[dict] = list(saved.get("evals", []))

    def state(self) -> dict[str, list]:
        return {"steps": self.steps, "loss": self.loss, "evals": self.evals}


def _summary(config: TrainConfig, mode: str, world: int, params: int, history: _History,
             counters: dict, skipped: list[int], seconds: float, steps_run: int,
             final: dict[str, float]) -> dict[str, Any]:
    tail = max(1, len(history.loss) // 10)
    first = sum(history.loss[:tail]) / tail if history.loss else math.nan
    last = sum(history.loss[-tail:]) / tail if history.loss else math.nan
    fp32 = counters.get("bytes_fp32_allreduce", 0.0)
    return {
        "config": {**config.run_key(), "steps": config.steps, "out": config.out,
                   "log_every": config.log_every, "eval_every": config.eval_every,
                   "on_nonfinite": config.on_nonfinite, "device": config.device},
        "versions": versions(),
        "mode": mode, "world": world, "parameters": params,
        "steps": history.steps, "loss": history.loss, "evals": history.evals,
        "loss_first": first, "loss_last": last, **final,
        "bytes": counters,
        "bytes_ratio_vs_fp32": counters["bytes_sent"] / fp32 if fp32 else None,
        "skipped_steps": skipped, "seconds": seconds,
        "step_ms": 1e3 * seconds / max(steps_run, 1),
    }


def _finish(config: TrainConfig, summary: dict[str, Any]) -> dict[str, Any]:
    out = Path(config.out)
    write_json(out / "result.json", summary)
    title = (f"{summary['config']['method']} on {config.model} / {config.data}, "
             f"N={summary['world']}, B={config.batch}, η={config.lr}")
    plot_history(summary["steps"], summary["loss"], out / "loss.png", title)
    summary["message"] = (
        f"{summary['mode']} N={summary['world']} {config.method}: loss "
        f"{summary['loss_first']:.4g} -> {summary['loss_last']:.4g} (mean of first/last 10 % "
        f"of steps), test accuracy {summary['test_accuracy']:.3f}, "
        f"{summary['step_ms']:.1f} ms/step; wrote {out / 'result.json'}")
    return summary


def _init_group(config: TrainConfig) -> tuple[int, int, int, str | None]:
    """Initialise torch.distributed; returns (rank, world, local_world, note)."""
    init = config.init_method or os.environ.get("COMPSDE_INIT_METHOD")
    note = None
    if "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        init = init or "env://"
    else:
        rank, world = 0, 1
        if init is None:
            handle, name = tempfile.mkstemp(prefix="compsde-init-")
            os.close(handle)
            os.unlink(name)
            init = f"file://{name}"
        note = ("note: world size 1 (not launched by torchrun): training alone; use torchrun "
                "--nproc-per-node N for N ranks or --simulate-agents N for N agents in one "
                "process")
    backend = "nccl" if config.device.startswith("cuda") else "gloo"
    try:
        dist.init_process_group(backend, init_method=init, rank=rank, world_size=world,
                                timeout=timedelta(seconds=config.timeout))
    except (RuntimeError, OSError) as exc:          # includes DistError / store timeouts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise RunFailed(f"could not form the process group of {world} ranks at {init} "
                        f"within {config.timeout:g} s: {first[:300]}") from None
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return rank, world, local_world, note


def _model(config: TrainConfig, data: Dataset, device: torch.device) -> nn.Module:
    """The model of ``--model``: the seed's initialisation, or the parameters of
    ``--init-from``."""
    model = make_model(config.model, data.image_shape, data.classes, seed=config.seed,
                       device=device)
    if config.init_from is not None:
        state = torch.load(config.init_from, map_location=device, weights_only=True)
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise ValueError(f"init_from {config.init_from} does not fit --model "
                             f"{config.model}: {str(exc).splitlines()[0][:200]}") from None
    return model


def _device(config: TrainConfig) -> torch.device:
    if config.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device cuda requested but no CUDA device is available; use --device "
                         "cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device(f"cuda:{local}" if config.device == "cuda" else config.device)


def run(config: TrainConfig) -> dict[str, Any]:
    """Run one training job (torchrun ranks or simulated agents); returns the summary."""
    device = _device(config)
    data = load_dataset(config.data)
    if config.simulate_agents is not None:
        _threads(config, 1)
        return _run_simulated(config, data, device)
    try:
        return _run_distributed(config, data, device)
    finally:                    # a refused resume or a failed step leaves no group behind
        if dist.is_initialized():
            dist.destroy_process_group()


def _run_distributed(config: TrainConfig, data: Dataset, device: torch.device) -> dict:
    rank, world, local_world, note = _init_group(config)
    _threads(config, local_world)
    if note and rank == 0:
        print(note, file=sys.stderr, flush=True)
    model = _model(config, data, device)
    sharded = config.parallel in ("fsdp", "hsdp")
    if sharded:                                 # the sharded model plays DDP's part below
        ddp = fsdp.shard_blocks(model, _hsdp_mesh(config, world, device))
    else:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None,
            bucket_cap_mb=config.bucket_cap_mb)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    ckpt = _load_checkpoint(config, world, device) if config.resume else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # the world-size-1 note is printed above
        if ckpt is not None:
            if sharded:
                fsdp.load_full_state(model, opt, ckpt["model"], ckpt["optimizer"])
            else:
                model.load_state_dict(ckpt["model"])
                opt.load_state_dict(ckpt["optimizer"])
            kind = {"ddp": HookState, "fsdp": fsdp.FSDPState, "hsdp": HSDPState}[config.parallel]
            saved = kind.__new__(kind)
            # each rank's own hook state (its buffers: Signum's momentum, EF's errors); older
            # checkpoints hold rank 0's only
            saved.__setstate__(ckpt["hooks"][rank] if "hooks" in ckpt else ckpt["hook"])
            state = register(ddp, saved)
        else:
            state = register(ddp, config.method, seed=config.seed, noise=config.noise,
                             sign_wire=config.sign_wire, randomness=config.randomness,
                             on_nonfinite=config.on_nonfinite)
    sampler = ShardSampler(len(data.y_train), rank, world, config.batch, config.seed)
    if not sharded:
        with guard(0, config.timeout):  # same bucket layout in every step, resumed or not
            prime_buckets(ddp, state, data.train_batch(sampler.indices(0), device)[0])
    history = _History(ckpt["history"] if ckpt else None)
    start = ckpt["step"] if ckpt else 0
    pending: list[torch.Tensor] = []
    bar = progress_bar(config.steps, initial=start, enabled=_progress(config, rank),
                       desc=config.method, unit="step")
    began = time.perf_counter()
    for step in range(start, config.steps):
        with guard(step, config.timeout):
            x, y = data.train_batch(sampler.indices(step), device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(ddp(x), y)
            loss.backward()
            if not state.skipped:
                opt.step()
            pending.append(loss.detach())
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                losses = torch.stack(pending).double()
                dist.all_reduce(losses)
                history.steps.extend(range(done - len(pending), done))
                history.loss.extend((losses / world).tolist())
                pending.clear()
                bar.set_postfix(loss=f"{history.loss[-1]:.4f}")
            if config.eval_every and done % config.eval_every == 0 and done < config.steps:
                history.evals.append({"step": done, **evaluate(model, data, device, rank,
                                                               world, reduce=True)})
        bar.update(1)
        if config.checkpoint_every and done % config.checkpoint_every == 0:
            with guard(done, config.timeout):
                model_state, opt_state = (fsdp.full_state(model, opt) if sharded
                                          else (model.state_dict(), opt.state_dict()))
                hooks: list[Any] = [None] * world      # every rank's buffers, not rank 0's
                dist.all_gather_object(hooks, _cpu_state(state.__getstate__()))
            if rank == 0:
                _checkpoint(Path(config.out), {
                    "step": done, "config": config.run_key(), "world": world,
                    "model": model_state, "optimizer": opt_state,
                    "hook": hooks[0], "hooks": hooks, "history": history.state()})
    bar.close()
    seconds = time.perf_counter() - began
    with guard(config.steps, config.timeout):
        final = evaluate(model, data, device, rank, world, reduce=True)
    summary = _summary(config, "torchrun" if world > 1 else "single", world,
                       count_parameters(model), history, state.counters(),
                       state.skipped_steps, seconds, config.steps - start, final)
    summary["rank"] = rank
    layout = getattr(state, "layout", {})           # DDP buckets; FSDP: its sharded blocks
    summary["buckets"] = {str(b): list(names) for b, names in sorted(layout.items())}
    if rank == 0:
        _finish(config, summary)
    dist.barrier()
    dist.destroy_process_group()
    return summary


def _cpu_state(state: Any) -> Any:
    """``state`` with every tensor on the CPU (what a checkpoint keeps, whatever the device)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _cpu_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_state(v) for v in state)
    return state


def _hsdp_mesh(config: TrainConfig, world: int, device: torch.device) -> Any:
    """The (R, S) device mesh of ``--parallel hsdp`` (None otherwise)."""
    if config.parallel != "hsdp":
        return None
    from torch.distributed.device_mesh import init_device_mesh

    if world % config.replicas:
        raise ValueError(f"replicas must divide the world size {world}, got {config.replicas}")
    return init_device_mesh(device.type, (config.replicas, world // config.replicas),
                            mesh_dim_names=("replicate", "shard"))


def _progress(config: TrainConfig, rank: int) -> bool:
    if rank != 0:
        return False
    return True if config.progress is None else config.progress  # lines when not a terminal


def _run_simulated(config: TrainConfig, data: Dataset, device: torch.device) -> dict:
    agents = config.simulate_agents
    model = _model(config, data, device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    ckpt = _load_checkpoint(config, agents, device) if config.resume else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sim = AgentSimulator.__new__(AgentSimulator)
        sim.__setstate__(ckpt["hook"])
    else:
        sim = AgentSimulator(config.method, agents, seed=config.seed, noise=config.noise,
                             sign_wire=config.sign_wire, randomness=config.randomness,
                             on_nonfinite=config.on_nonfinite)
    layout = ddp_layout(model, config.bucket_cap_mb)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    samplers = [ShardSampler(len(data.y_train), i, agents, config.batch, config.seed)
                for i in range(agents)]
    history = _History(ckpt["history"] if ckpt else None)
    start = ckpt["step"] if ckpt else 0
    bar = progress_bar(config.steps, initial=start, enabled=_progress(config, 0),
                       desc=f"{config.method} ×{agents}", unit="step")
    began = time.perf_counter()
    for step in range(start, config.steps):
        grads = {n: torch.empty((agents, *p.shape), dtype=p.dtype, device=device)
                 for n, p in named.items()}
        losses = []
        buffers = None
        for agent in range(agents):
            x, y = data.train_batch(samplers[agent].indices(step), device)
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            losses.append(float(loss.detach()))
            for n, p in named.items():
                grads[n][agent].copy_(p.grad if p.grad is not None else torch.zeros_like(p))
            if agent == 0:   # DDP keeps rank 0's buffers (BatchNorm running statistics)
                buffers = [b.clone() for b in model.buffers()]
        for b, saved in zip(model.buffers(), buffers or [], strict=False):
            b.copy_(saved)
        with guard(step, None):
            mean = sim.reduce(grads, layout)
        if not sim.skipped:
            for n, p in named.items():
                p.grad = mean[n].clone()
            opt.step()
        history.steps.append(step)
        history.loss.append(sum(losses) / agents)
        done = step + 1
        if config.eval_every and done % config.eval_every == 0 and done < config.steps:
            history.evals.append({"step": done, **evaluate(model, data, device)})
        if done % config.log_every == 0:
            bar.set_postfix(loss=f"{history.loss[-1]:.4f}")
        bar.update(1)
        if config.checkpoint_every and done % config.checkpoint_every == 0:
            _checkpoint(Path(config.out), {
                "step": done, "config": config.run_key(), "world": agents,
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "hook": sim.__getstate__(), "history": history.state()})
    bar.close()
    seconds = time.perf_counter() - began
    final = evaluate(model, data, device)
    summary = _summary(config, "simulate", agents, count_parameters(model), history,
                       sim.counters(), sim.skipped_steps, seconds, config.steps - start, final)
    summary["rank"] = 0
    return _finish(config, summary)
