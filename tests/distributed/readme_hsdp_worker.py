"""One rank running README.md's HSDP snippet as written (R, S and the model supplied)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_spawn import join_group

import compsde

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(6, 6), nn.Linear(6, 3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def main() -> None:
    out = Path(sys.argv[1])
    rank, world = join_group()
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S)
                   if "mesh_dim_names" in b)
    torch.manual_seed(0)                     # the same model on every rank (test code)
    scope = {"compsde": compsde, "model": Blocks(), "R": 2, "S": world // 2}
    exec(compile(snippet, "README.md", "exec"), scope)
    model, state = scope["model"], scope["state"]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(rank))
    model(x).square().sum().backward()
    opt.step()
    torch.save({"type": type(state).__name__, "counters": state.counters(), "step": state.step},
               out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
