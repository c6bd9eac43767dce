"""Shared fixtures: a non-interactive matplotlib backend and CPU generators."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

# The suite's tensors are small: one intra-op thread avoids oversubscribing the 2 CI cores
# (multi-process tests run several ranks at once), which can slow small ops by 10-50x.
torch.set_num_threads(1)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
