"""What the framework workers share: a tiny regression model and data, and the independent
computations the tests compare with (DSignSGD's update and bytes at N ranks, one bucket).

The workers run under tests/distributed/ddp_spawn.py (gloo ranks on localhost, hard timeout)
and save one record per rank and run: ``steps`` (this rank's flat parameters before the step,
its batch, the flat parameters after), ``losses``, ``counters`` and the final ``params``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "distributed"))

from ddp_spawn import describe, join_group, rank_records, run_ranks  # noqa: E402

__all__ = ["LR", "describe", "join_group", "run_ranks"]

LR = 0.02
FEATURES, HIDDEN, SAMPLES, BATCH = 8, 16, 128, 16


def finish() -> None:
    """End a rank once its record is saved: wait for the other rank, then leave without the
    interpreter's teardown, where a framework's live gloo threads may abort the process
    ("terminate called without an active exception") after the work is done."""
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def make_net(seed: int = 0) -> nn.Module:
    """The model every rank starts from (the same ``seed`` on every rank)."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net


def dataset(seed: int = 1) -> torch.utils.data.TensorDataset:
    """``y = x·w + 0.1·noise``: a regression every method makes progress on."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(SAMPLES, FEATURES, generator=gen)
    w = torch.randn(FEATURES, 1, generator=gen)
    return torch.utils.data.TensorDataset(x, x @ w + 0.1 * torch.randn(SAMPLES, 1, generator=gen))


def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(net(x), y)


def flat(net: nn.Module) -> torch.Tensor:
    """The parameters, flat (gathered in full where FSDP2 shards them)."""
    return torch.cat([(p.full_tensor() if hasattr(p, "full_tensor") else p).detach()
                      .reshape(-1) for p in net.parameters()]).clone()


def n_params() -> int:
    return flat(make_net()).numel()


def local_gradient(params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A rank's own gradient at ``params`` on its batch, with no framework and no wrapper."""
    net = make_net()
    torch.nn.utils.vector_to_parameters(params, net.parameters())
    loss_fn(net, x, y).backward()
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()])


def dsignsgd_update(params: torch.Tensor, batches: list[tuple[torch.Tensor, torch.Tensor]]
                    ) -> torch.Tensor:
    """``x − η · mean_i sign(g_i)`` (sign(0) = +1, the hooks' convention)."""
    signs = [torch.where(local_gradient(params, x, y) >= 0, 1.0, -1.0) for x, y in batches]
    return params - LR * torch.stack(signs).mean(0)


def sign_bits_bytes(d: int, world: int, steps: int) -> float:
    """Bytes one rank sends in ``steps`` DSignSGD steps of one bucket of ``d`` coordinates on
    the bit all-gather (N ≤ 4): ``(N − 1)(⌈d/8⌉ + 1)`` per step (one status byte)."""
    return steps * (world - 1) * (math.ceil(d / 8) + 1)


def fp32_allreduce_bytes(d: int, world: int, steps: int) -> float:
    return steps * 2 * (world - 1) / world * 4 * d


def launch(worker: str, out: Path, timeout: float = 120.0) -> list[dict]:
    """Run ``worker`` on 2 gloo ranks (killed after ``timeout`` s); every rank's record."""
    return rank_records(HERE / worker, 2, out, timeout)


def check_exact_dsignsgd(ranks: list[dict], key: str = "exact") -> None:
    """Every recorded step is ``x − η · mean_i sign(g_i)`` of the two ranks' own gradients on
    their own (different) batches; the ranks hold the same parameters throughout; the loss
    falls."""
    runs = [rank[key] for rank in ranks]
    steps = list(zip(*(run["steps"] for run in runs), strict=True))
    assert len(steps) == 8
    disagreements = 0
    for per_rank in steps:
        before = per_rank[0][0]
        assert all(torch.equal(s[0], before) and torch.equal(s[3], per_rank[0][3])
                   for s in per_rank)
        assert not torch.equal(per_rank[0][1], per_rank[1][1])     # two different batches
        want = dsignsgd_update(before, [(s[1], s[2]) for s in per_rank])
        assert torch.equal(per_rank[0][3], want)
        disagreements += int(((per_rank[0][3] - before).abs() == 0).sum())
    assert disagreements > 0          # some signs disagreed: a mean, not one rank's sign
    assert torch.equal(runs[0]["params"], runs[1]["params"])
    for run in runs:
        losses = run["losses"]
        assert sum(losses[-4:]) < 0.7 * sum(losses[:4]), losses


def check_ddp_sign_bytes(ranks: list[dict]) -> None:
    """The 8 steps' bytes are DSignSGD's bit all-gather of one DDP bucket, about 1/32 of
    fp32's allreduce (a status byte per message aside)."""
    runs = [rank["exact"] for rank in ranks]
    d = n_params()
    for run in runs:
        counters = run["counters"]
        assert counters["bytes_sent"] == sign_bits_bytes(d, 2, 8)
        assert counters["payload_bytes"] == sign_bits_bytes(d, 2, 8)
        assert counters["bytes_fp32_allreduce"] == fp32_allreduce_bytes(d, 2, 8)


def check_resume(ranks: list[dict], straight: str = "straight", resumed: str = "resumed"
                 ) -> None:
    """A Rand-k run resumed from a checkpoint at step 4 ends bitwise where the uninterrupted
    one does, with the same step and byte counters."""
    for rank in ranks:
        a, b = rank[straight], rank[resumed]
        assert torch.equal(a["params"], b["params"])
        assert a["step"] == b["step"] == 8
        assert a["counters"] == b["counters"]
    assert torch.equal(ranks[0][resumed]["params"], ranks[1][resumed]["params"])
