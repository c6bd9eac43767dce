"""README.md's HSDP snippet runs as written on 2 gloo ranks (R = 2 nodes of S = 1 rank)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ddp_spawn import describe, run_ranks  # noqa: E402


def test_readme_hsdp_snippet_runs(tmp_path):
    results = run_ranks([str(HERE / "readme_hsdp_worker.py"), str(tmp_path)], 2, tmp_path,
                        timeout=120)
    assert all(r.returncode == 0 for r in results), describe(results)
    for rank in range(2):
        record = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert record["type"] == "HSDPState" and record["step"] == 1
        counters = record["counters"]
        assert 0 < counters["bytes_sent"] <= counters["bytes_fp32_allreduce"] / 16
        assert counters["bytes_shard_sent"] == 0          # S = 1: nothing within a node
