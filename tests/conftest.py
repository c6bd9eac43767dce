"""Shared fixtures: a non-interactive matplotlib backend and CPU generators."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
