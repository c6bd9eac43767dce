"""Models: shapes, sizes, determinism from an explicit generator, clear errors."""

from __future__ import annotations

import pytest
import torch

from compsde.nn.models import build_model, count_parameters, make_model


def _count_on_meta(spec: str, shape=(3, 32, 32)) -> int:
    with torch.device("meta"):
        return count_parameters(build_model(spec, shape, 10))


SPECS = ["mlp", "mlp:hidden=32", "resnet", "resnet:depth=14,norm=group", "vit",
         "vit:dim=32,depth=1,heads=2,patch=7"]
# a ViT patch must divide the image: patch 7 only on 28x28
SHAPE_CASES = [(spec, shape) for spec in SPECS for shape in [(1, 28, 28), (3, 32, 32)]
               if not ("patch=7" in spec and shape[1] % 7)]


@pytest.mark.parametrize(("spec", "shape"), SHAPE_CASES)
def test_forward_backward_shapes(spec, shape):
    model = make_model(spec, shape, 10, seed=1)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sizes_from_quick_to_paper_scale():
    assert 70_000 < _count_on_meta("resnet") < 90_000                    # ResNet-8
    assert 260_000 < _count_on_meta("resnet:depth=20") < 290_000         # ResNet-20
    assert 10_500_000 < _count_on_meta("resnet:depth=18") < 11_500_000   # ResNet-18-like
    assert 20_000_000 < _count_on_meta("vit:dim=384,depth=12,heads=6,mlp=4") < 23_000_000  # ViT-S
    assert _count_on_meta("mlp", (1, 28, 28)) == 784 * 256 + 256 + 256 * 128 + 128 + 1290


def test_same_seed_same_model_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = make_model("vit", (1, 28, 28), 10, seed=3)
    b = make_model("vit", (1, 28, 28), 10, seed=3)
    c = make_model("vit", (1, 28, 28), 10, seed=4)
    assert torch.equal(state, torch.get_rng_state())
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(),
                               c.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
        if x.dtype.is_floating_point and x.numel() > 10 and x.std() > 0:
            assert not torch.equal(x, z), name


def test_batchnorm_buffers_are_initialised():
    model = make_model("resnet", (3, 32, 32), 10)
    bn = model.stem[1]
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))


@pytest.mark.parametrize(("spec", "message"), [
    ("transformer", "model must be one of"),
    ("mlp:width=3", "does not take width"),
    ("resnet:depth=9", "depth of resnet must be 18 or 6n"),
    ("resnet:norm=layer", "norm must be one of"),
    ("vit:patch=5", "patch must divide"),
    ("vit:dim=30,heads=4", "dim must be a multiple of heads"),
    ("vit:mlp=-1", "mlp of vit must be a number > 0"),
    ("mlp:hidden=0", "hidden must be"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        make_model(spec, (1, 28, 28), 10)
    with pytest.raises(ValueError, match="image_shape"):
        make_model("mlp", (28, 28), 10)
