"""Per-group noise: the tail fit recovers a known ν from Student-t gradients of a GPT's shape."""

from __future__ import annotations

import math

import pytest
import torch

from compsde.diagnose.groups import fit_group, pick_group_coordinates
from compsde.diagnose.measure import measure_gradients
from compsde.nn.groups import GROUP_NAMES, parameter_groups
from compsde.nn.models import make_model
from compsde.noise import make as make_noise


def test_groups_cover_every_parameter_once():
    for spec, shape, expected in [
        ("gpt:size=tiny", (16,), {"embeddings", "attention", "mlp", "norms"}),
        ("mlp", (1, 28, 28), {"mlp", "head"}),
        ("resnet:norm=group", (1, 28, 28), {"conv", "norms", "head"}),
        ("vit:dim=32,depth=1,heads=2,patch=7", (1, 28, 28),
         {"embeddings", "attention", "mlp", "norms", "head"}),
    ]:
        model = make_model(spec, shape, 200 if spec.startswith("gpt") else 10)
        groups = parameter_groups(model)
        assert set(groups) == expected and set(groups) <= set(GROUP_NAMES)
        flat = torch.cat(list(groups.values()))
        d = sum(p.numel() for p in model.parameters())
        assert torch.equal(flat.sort().values, torch.arange(d)), spec


def test_gpt_groups_are_where_the_parameters_are():
    model = make_model("gpt:size=tiny", (16,), 200)
    groups = parameter_groups(model)
    assert groups["embeddings"].numel() == 200 * 32 + 16 * 32        # tokens (tied) + positions
    assert groups["attention"].numel() == 4 * 32 * 32 + 4 * 32       # qkv + proj
    assert groups["norms"].numel() == 3 * 2 * 32


@pytest.mark.parametrize("nu", [1.5, 4.0])
def test_tail_fit_recovers_nu_per_group_of_a_gpt(nu):
    """Gradients ``μ_j + σ_j T`` with T ~ t_ν, d and groups of a tiny GPT, scales differing by
    100× between groups: every group's ν̂ lies within 5 se of ν (on ξ = 1/ν, where se is
    computed), and its 95 % interval is sensible."""
    model = make_model("gpt:size=tiny", (16,), 200)
    groups = parameter_groups(model)
    d = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(7)
    scale = torch.empty(d, dtype=torch.float64)
    for i, index in enumerate(groups.values()):
        base = 10.0 ** (-3 + i)
        scale[index] = base * torch.exp(torch.randn(index.numel(), generator=gen,
                                                    dtype=torch.float64))
    loc = 0.3 * scale * torch.randn(d, generator=gen, dtype=torch.float64)
    law = make_noise(f"student-t:nu={nu},scale=1")
    samples = 64

    def gradients():
        for _ in range(samples):
            t = law.sample((1, d), gen, dtype=torch.float64)[0]
            yield (loc + scale * t).float()

    result = measure_gradients(gradients(), samples=samples, compressors=[],
                               generator=torch.Generator().manual_seed(3), groups=groups,
                               per_group=1000)
    assert set(result.groups) == set(groups)
    for name, g in result.groups.items():
        assert g.kept == min(1000, groups[name].numel()) and g.sparse == 0
        assert g.xi_se is not None and g.xi_se > 0
        assert abs(1.0 / g.nu - 1.0 / nu) <= 5 * g.xi_se, (name, g.nu, g.xi_se)
        lo, hi = g.nu_interval
        assert lo < g.nu < hi
    # phases: |μ|/σ ≈ 0.3·|n| ≪ 1 — nearly every coordinate is in Phase 3
    assert all(g.phases["phase3"] > 0.9 for g in result.groups.values())
    summary = result.to_dict()["groups"]
    assert set(summary) == set(groups) and "nu_se" in summary["attention"]


def test_sparse_coordinates_are_counted_not_fitted():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(32, 40, dtype=torch.float64)
    x[:, :20] = torch.randn(32, 20, generator=gen, dtype=torch.float64)
    x[::8, 20:] = 1.0                            # rare spikes, mostly exactly zero
    g = fit_group("embeddings", x, 40)
    assert g.sparse == 20 and g.kept == 40 and math.isfinite(g.hill_alpha)
    empty = fit_group("embeddings", torch.zeros(32, 5, dtype=torch.float64), 5)
    assert math.isnan(g.nu) is False and math.isnan(empty.nu) and empty.sparse == 5


def test_group_coordinates_are_uniform_subsets():
    groups = {"a": torch.arange(10), "b": torch.arange(10, 5000)}
    picked = pick_group_coordinates(groups, 100, torch.Generator().manual_seed(0))
    assert torch.equal(picked["a"], groups["a"])
    assert picked["b"].numel() == 100 and picked["b"].unique().numel() == 100
    assert int(picked["b"].min()) >= 10
