"""The flat-parameter view of a network: per-agent gradients by vmap, the top Hessian eigenvalue."""

from __future__ import annotations

import pytest
import torch

from compsde.experiments.deep import intra_op_threads
from compsde.nn import make_model
from compsde.nn.flat import FlatModel, sharpness


@intra_op_threads(1)
def test_agent_gradients_vmap_equals_loop():
    model = make_model("resnet:depth=8,width=4,norm=group", (1, 8, 8), 10, seed=3)
    flat = FlatModel(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((3, 5, 1, 8, 8), generator=gen)
    y = torch.randint(10, (3, 5), generator=gen)
    g = flat.agent_grads(flat.theta0, x, y)
    assert g.shape == (3, flat.dim)
    torch.testing.assert_close(g, flat.agent_grads_loop(flat.theta0, x, y), rtol=1e-4,
                               atol=1e-6)
    # In chunks of agents (memory bound) the rows are the same.
    torch.testing.assert_close(flat.agent_grads(flat.theta0, x, y, max_samples=10), g)
    # Agent i's row is the gradient of its own batch only.
    single = torch.func.grad(flat.loss)(flat.theta0, x[1], y[1])
    torch.testing.assert_close(g[1], single, rtol=1e-4, atol=1e-6)


def test_batchnorm_models_are_refused():
    with pytest.raises(ValueError, match="BatchNorm"):
        FlatModel(make_model("resnet:depth=8,width=4", (1, 8, 8), 10))



@intra_op_threads(1)
def test_sharpness_matches_the_top_hessian_eigenvalue():
    model = make_model("mlp:hidden=6", (1, 4, 4), 3, seed=0)
    flat = FlatModel(model)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn((32, 1, 4, 4), generator=gen), torch.randint(3, (32,), generator=gen)
    theta = flat.theta0.double()
    model.double()
    hessian = torch.autograd.functional.hessian(lambda t: flat.loss(t, x.double(), y), theta)
    model.float()
    top = torch.linalg.eigvalsh(hessian).abs().max().item()
    estimate = sharpness(flat, flat.theta0, x, y, 100, torch.Generator().manual_seed(2))
    assert estimate == pytest.approx(top, rel=0.02)
    assert next(model.parameters()).dtype == torch.float32  # restored
