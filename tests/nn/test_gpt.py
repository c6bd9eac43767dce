"""The decoder-only transformer: causal mask, tied embeddings, presets, shapes, errors."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from compsde.nn.gpt import GPT
from compsde.nn.models import build_model, count_parameters, make_model

VOCAB, T = 50, 12


def _tokens(seed: int, shape=(3, T)) -> torch.Tensor:
    return torch.randint(VOCAB, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_output_at_t_ignores_tokens_after_t(size):
    model = make_model(f"gpt:size={size}", (T,), VOCAB, seed=2)
    x = _tokens(0)
    base = model(x)
    assert base.shape == (3, VOCAB, T)
    for t in (0, 5, T - 2):
        changed = x.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1 + _tokens(t + 1)[:, t + 1:]) % VOCAB
        assert not torch.equal(changed[:, t + 1:], x[:, t + 1:])
        out = model(changed)
        torch.testing.assert_close(out[..., :t + 1], base[..., :t + 1], rtol=0, atol=1e-6)
        assert (out[..., t + 1:] - base[..., t + 1:]).abs().max() > 1e-4  # later ones do see it


def test_output_layer_is_the_token_embedding():
    model = make_model("gpt:size=tiny", (T,), VOCAB, seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert not any("head" in n for n in names)
    x = _tokens(1)
    hidden = model.norm(model.blocks(model.tokens(x) + model.pos))
    torch.testing.assert_close(model(x), (hidden @ model.tokens.weight.T).transpose(1, 2))


def test_cross_entropy_layout_and_gradients_under_vmap():
    model = make_model("gpt:size=tiny", (T,), VOCAB, seed=0)
    x, y = _tokens(3), _tokens(4)
    loss = F.cross_entropy(model(x), y)
    flat_logits = model(x).transpose(1, 2).reshape(-1, VOCAB)
    torch.testing.assert_close(loss, F.cross_entropy(flat_logits, y.reshape(-1)))
    params = {n: p.detach() for n, p in model.named_parameters()}

    def f(p, xb, yb):
        return F.cross_entropy(functional_call(model, p, (xb,)), yb)

    batched = vmap(grad(f), in_dims=(None, 0, 0))(params, x.view(3, 1, T), y.view(3, 1, T))
    for i in range(3):
        single = grad(f)(params, x[i:i + 1], y[i:i + 1])
        for name in params:
            torch.testing.assert_close(batched[name][i], single[name], rtol=1e-4, atol=1e-6)


def test_presets_sizes_and_determinism():
    with torch.device("meta"):
        tiny = count_parameters(build_model("gpt:size=tiny", (32,), 2000))
        small = count_parameters(build_model("gpt", (32,), 2000))
        big = count_parameters(build_model("gpt:size=gpu", (128,), 8000))
    assert tiny < small < big
    # small: 2000·64 tokens + 32·64 positions + 2 blocks · (12·64² + 13·64) + 2·64 final norm
    assert small == 2000 * 64 + 32 * 64 + 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64
    assert big > 10_000_000
    state = torch.get_rng_state()
    a = make_model("gpt:size=tiny", (T,), VOCAB, seed=5)
    b = make_model("gpt:size=tiny", (T,), VOCAB, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    assert isinstance(a, GPT) and a.tokens.weight.std() < 0.03


@pytest.mark.parametrize(("spec", "shape", "message"), [
    ("gpt:size=huge", (T,), "size must be one of tiny, small, gpu"),
    ("gpt:dim=30,heads=4", (T,), "dim must be a multiple of heads"),
    ("gpt:mlp=0", (T,), r"mlp of gpt must be a number in \(0, 64\]"),
    ("gpt:mlp=inf", (T,), r"mlp of gpt must be a number in \(0, 64\]"),
    ("gpt:depth=10000000", (T,), "parameters: a run needs about"),
    ("gpt:patch=4", (T,), "does not take patch"),
    ("gpt", (1, 28, 28), "needs token windows of shape"),
])
def test_bad_gpt_specs(spec, shape, message):
    with pytest.raises(ValueError, match=message):
        make_model(spec, shape, VOCAB)


def test_longer_sequences_than_the_context_are_refused():
    model = make_model("gpt:size=tiny", (T,), VOCAB)
    with pytest.raises(ValueError, match="at most the context"):
        model(_tokens(0, (1, T + 1)))
