"""One rank of the Lightning FSDP2 tests: ``python lightning_fsdp_worker.py OUT_DIR``.

``ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)`` with both linear
layers and then ``self.net`` sharded by ``fully_shard`` in ``configure_model``: ``exact``
(DSignSGD, 2 epochs, every step recorded with the full parameters); Rand-k ``straight``
(2 epochs) and ``resumed`` (1 epoch, a distributed checkpoint, a fresh module and callback
resumed to 2). Writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning.pytorch as pl
from integration_cases import BATCH, LR, dataset, finish, flat, join_group, loss_fn, make_net
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.fsdp import fully_shard

from compsde.lightning import Compression

RANDK = "dcsgd:randk:ratio=0.25"


class ShardedRegression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = make_net()

    def configure_model(self):
        mesh = self.device_mesh["data_parallel"]
        for layer in (self.net[0], self.net[2]):
            fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)

    def training_step(self, batch, batch_idx):
        return loss_fn(self.net, *batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(dataset(), batch_size=BATCH, shuffle=False)


class Recorder(pl.Callback):
    def __init__(self):
        self.steps, self.losses = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._before = (flat(pl_module.net), batch[0].clone(), batch[1].clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((*self._before, flat(pl_module.net)))
        self.losses.append(float(outputs["loss"]))


def fit(out: Path, epochs: int, callbacks: list, ckpt_path: str | None = None):
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_epochs=epochs,
                         callbacks=callbacks, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(out))
    module = ShardedRegression()
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer, module


def summary(callback: Compression, module: pl.LightningModule) -> dict:
    return {"params": flat(module.net), "step": callback.state.step,
            "counters": callback.state.counters(), "metrics": callback.metrics(),
            "state": type(callback.state).__name__}


def main() -> None:
    out = Path(sys.argv[1])
    rank, _ = join_group()
    recorder, compression = Recorder(), Compression("dsignsgd", seed=0)
    _, module = fit(out, 2, [compression, recorder])
    record = {"exact": {**summary(compression, module), "steps": recorder.steps,
                        "losses": recorder.losses}}
    straight = Compression(RANDK, seed=3)
    _, module = fit(out, 2, [straight])
    record["straight"] = summary(straight, module)
    trainer, _ = fit(out, 1, [Compression(RANDK, seed=3)])
    trainer.save_checkpoint(out / "half")
    resumed = Compression(RANDK, seed=3)
    _, module = fit(out, 2, [resumed], ckpt_path=str(out / "half"))
    record["resumed"] = summary(resumed, module)
    torch.save(record, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
    finish()
