"""README.md's Lightning, Fabric and Accelerate recipes run as written on 2 gloo ranks.

Each recipe trains DSignSGD for an epoch (4 steps of each rank's half of the data): the ranks
end with the same parameters, moved from the start, the bytes are DSignSGD's bit all-gather
for the steps taken, and the checkpoint the recipe writes exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from integration_cases import HERE, describe, flat, make_net, n_params, run_ranks
from readme_worker import recipes

CHECKPOINTS = {"lightning": "last.ckpt", "fabric": "checkpoint.pt", "accelerate": "checkpoints"}


def test_the_section_has_the_three_recipes():
    found = recipes()
    assert len(found) == 3
    assert "Compression(" in found[0] and "fabric.setup" in found[1]
    assert "accelerator.prepare" in found[2]


@pytest.mark.parametrize(("index", "name"), list(enumerate(CHECKPOINTS)))
def test_recipe_trains_dsignsgd_on_two_ranks(index, name, tmp_path):
    results = run_ranks([str(HERE / "readme_worker.py"), str(index), str(tmp_path)], 2,
                        tmp_path, timeout=120)
    assert all(r.returncode == 0 for r in results), describe(results)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert not torch.equal(ranks[0]["params"], flat(make_net()))
    d = n_params()
    for rank in ranks:
        assert rank["step"] == 4                       # 64 samples per rank, batches of 16
        assert rank["counters"]["bytes_sent"] == 4 * (-(-d // 8) + 1)
        assert CHECKPOINTS[name] in rank["files"]
