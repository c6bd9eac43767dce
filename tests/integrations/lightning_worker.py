"""One rank of the Lightning Trainer tests: ``python lightning_worker.py OUT_DIR``.

Runs, on the 2 gloo ranks of tests/distributed/ddp_spawn.py: ``exact`` (DSignSGD, 2 epochs,
every step recorded, a CSV logger), ``accumulate`` (the same with accumulate_grad_batches=2),
and Rand-k ``straight`` (2 epochs),
``resumed`` (1 epoch, a checkpoint, a fresh module and callback resumed to 2 epochs), and the
same two with ``prime=False``. Writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning.pytorch as pl
from integration_cases import BATCH, LR, dataset, finish, flat, join_group, loss_fn, make_net
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy

from compsde.lightning import Compression

RANDK = "dcsgd:randk:ratio=0.25"   # its coordinates depend on the step and the bucket order


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = make_net()

    def training_step(self, batch, batch_idx):
        loss = loss_fn(self.net, *batch)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(dataset(), batch_size=BATCH, shuffle=False)


class Recorder(pl.Callback):
    """This rank's parameters before and after every step, its batch and its loss."""

    def __init__(self):
        self.steps, self.losses = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._before = (flat(pl_module.net), batch[0].clone(), batch[1].clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((*self._before, flat(pl_module.net)))
        self.losses.append(float(outputs["loss"]))


def fit(out: Path, epochs: int, callbacks: list, logger=False, ckpt_path: str | None = None,
        accumulate: int = 1) -> tuple[pl.Trainer, Regression]:
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(), max_epochs=epochs,
                         callbacks=callbacks, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=2, default_root_dir=str(out),
                         accumulate_grad_batches=accumulate)
    module = Regression()
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer, module


def summary(callback: Compression, module: Regression) -> dict:
    return {"params": flat(module.net), "step": callback.state.step,
            "counters": callback.state.counters(), "metrics": callback.metrics()}


def resume_pair(out: Path, prime: bool) -> dict:
    straight = Compression(RANDK, seed=3, prime=prime)
    _, module = fit(out, 2, [straight])
    record = {"straight": summary(straight, module), "layout": dict(straight.state.layout)}
    first = Compression(RANDK, seed=3, prime=prime)
    trainer, _ = fit(out, 1, [first])
    ckpt = out / f"half-{prime}.ckpt"
    trainer.save_checkpoint(ckpt)
    record["saved"] = torch.load(ckpt, weights_only=False).get("compsde")
    resumed = Compression(RANDK, seed=3, prime=prime)
    _, module = fit(out, 2, [resumed], ckpt_path=str(ckpt))
    record["resumed"] = summary(resumed, module)
    return record


def main() -> None:
    out = Path(sys.argv[1])
    rank, _world = join_group()
    recorder, compression = Recorder(), Compression("dsignsgd", seed=0)
    logger = CSVLogger(str(out), name="logs", version=0)
    _, module = fit(out, 2, [compression, recorder], logger=logger)
    record = {"exact": {**summary(compression, module), "steps": recorder.steps,
                        "losses": recorder.losses, "csv": str(out / "logs" / "version_0")}}
    recorder, compression = Recorder(), Compression("dsignsgd", seed=0)
    trainer, module = fit(out, 2, [compression, recorder], accumulate=2)
    record["accumulate"] = {**summary(compression, module), "steps": recorder.steps,
                            "global_step": trainer.global_step}
    record["resume"] = resume_pair(out, prime=True)
    record["resume-noprime"] = resume_pair(out, prime=False)
    torch.save(record, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
    finish()
