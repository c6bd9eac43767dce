"""One rank of the Accelerate tests: ``python accelerate_worker.py OUT_DIR``.

``register`` on the model ``accelerator.prepare`` returns, the state registered for
checkpointing: ``exact`` (DSignSGD, 8 steps recorded); Rand-k ``straight`` (8 steps) and
``resumed`` (4 steps, ``save_state``, a fresh Accelerator, model, optimizer and state,
``load_state``, 4 more). Writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accelerate import Accelerator
from integration_cases import BATCH, LR, dataset, finish, flat, join_group, loss_fn, make_net

import compsde

RANDK = "dcsgd:randk:ratio=0.25"


def setup(method):
    accelerator = Accelerator(cpu=True)
    net = make_net()
    loader = torch.utils.data.DataLoader(dataset(), batch_size=BATCH, shuffle=False)
    model, optimizer, loader = accelerator.prepare(
        net, torch.optim.SGD(net.parameters(), lr=LR), loader)
    batches = [batch for _ in range(2) for batch in loader]     # 2 epochs of 4 batches
    state = compsde.distributed.register(model, method, seed=3)
    accelerator.register_for_checkpointing(state)
    compsde.distributed.prime_buckets(model, state, batches[0][0])
    return accelerator, net, model, optimizer, state, batches


def train(accelerator, net, model, optimizer, batches: list) -> tuple[list, list]:
    record, losses = [], []
    for x, y in batches:
        before = flat(net)
        loss = loss_fn(model, x, y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        record.append((before, x.clone(), y.clone(), flat(net)))
        losses.append(loss.item())
    return record, losses


def main() -> None:
    out = Path(sys.argv[1])
    rank, _ = join_group()
    accelerator, net, model, optimizer, state, batches = setup("dsignsgd")
    steps, losses = train(accelerator, net, model, optimizer, batches)
    record = {"exact": {"steps": steps, "losses": losses, "counters": state.counters(),
                        "params": flat(net), "wrapper": type(model).__name__,
                        "distributed_type": str(accelerator.distributed_type)}}
    accelerator, net, model, optimizer, state, batches = setup(RANDK)
    train(accelerator, net, model, optimizer, batches)
    record["straight"] = {"params": flat(net), "counters": state.counters(), "step": state.step}
    accelerator, net, model, optimizer, state, batches = setup(RANDK)
    train(accelerator, net, model, optimizer, batches[:4])
    accelerator.save_state(str(out / "half"))
    accelerator, net, model, optimizer, state, batches = setup(RANDK)
    accelerator.load_state(str(out / "half"))
    train(accelerator, net, model, optimizer, batches[4:])
    record["resumed"] = {"params": flat(net), "counters": state.counters(), "step": state.step}
    torch.save(record, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
    finish()
