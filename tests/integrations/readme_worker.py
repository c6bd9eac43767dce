"""One rank running a recipe of README.md's "In Lightning, Fabric and Accelerate" section as
written: ``python readme_worker.py INDEX OUT_DIR`` (INDEX: the section's python blocks in order).

The recipe's free names are given as a user would have them: ``net``, ``loader``, ``loss_fn``
and ``lit_model`` (a LightningModule over ``net`` with a plain SGD optimizer). Writes
``OUT_DIR/rank{r}.pt``: the final parameters and the state's step and counters.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning.pytorch as pl
from integration_cases import BATCH, dataset, finish, flat, join_group, make_net
from torch import nn

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## In Lightning, Fabric and Accelerate"


def recipes() -> list[str]:
    text = README.read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


class LitModel(pl.LightningModule):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main() -> None:
    index, out = int(sys.argv[1]), Path(sys.argv[2])
    rank, _ = join_group()
    os.chdir(out)
    net = make_net()
    scope = {"net": net, "loss_fn": nn.functional.mse_loss, "lit_model": LitModel(net),
             "loader": torch.utils.data.DataLoader(dataset(), batch_size=BATCH)}
    exec(compile(recipes()[index], "README.md", "exec"), scope)
    state = scope.get("state")
    if state is None:            # the Trainer recipe: the callback's state
        state = next(c.state for c in scope["trainer"].callbacks if hasattr(c, "metrics"))
    torch.save({"params": flat(net), "step": state.step, "counters": state.counters(),
                "files": sorted(p.name for p in out.iterdir())}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
    finish()
