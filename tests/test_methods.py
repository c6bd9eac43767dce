"""The three methods: messages and the server's mean (THEORY.md §2)."""

from __future__ import annotations

import pytest
import torch

from compsde import compressors, methods


def test_dsgd_direction_is_the_mean_gradient(generator):
    grads = torch.randn(3, 4, 6, generator=generator, dtype=torch.float64)
    direction = methods.make("dsgd").direction(grads.clone(), generator)
    torch.testing.assert_close(direction, grads.mean(dim=1))


def test_dsignsgd_averages_signs_not_majority_vote(generator):
    grads = torch.tensor([[[1.0, -2.0], [3.0, -1.0], [-1.0, -5.0]]], dtype=torch.float64)
    direction = methods.make("dsignsgd").direction(grads, generator)
    torch.testing.assert_close(direction, torch.tensor([[1 / 3, -1.0]], dtype=torch.float64))


def test_dsignsgd_direction_matches_mean_of_sign_messages(generator):
    grads = torch.randn(5, 7, 9, generator=generator)
    grads[0, 0, 0] = 0.0  # sign(0) = +1, as on the 1-bit wire
    method = methods.make("dsignsgd")
    expected = method.messages(grads, generator).mean(dim=1)
    torch.testing.assert_close(method.direction(grads, generator), expected)


def test_dcsgd_messages_are_the_compressor_outputs():
    grads = torch.randn(2, 3, 10, generator=torch.Generator().manual_seed(0))
    method = methods.make("dcsgd:randk:k=3")
    got = method.messages(grads, torch.Generator().manual_seed(5))
    want = compressors.make("randk:k=3")(grads, torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, want)
    assert method.spec == "dcsgd:randk:k=3"
    assert method.omegas(3, 10) == pytest.approx([10 / 3 - 1] * 3)


def test_per_agent_compressors_apply_to_their_agents(generator):
    per_agent = [compressors.make("identity"), compressors.make("randk:k=1"),
                 compressors.make("identity")]
    method = methods.DCSGD(per_agent)
    grads = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64)
    messages = method.messages(grads, generator)
    torch.testing.assert_close(messages[:, 0], grads[:, 0])
    torch.testing.assert_close(messages[:, 2], grads[:, 2])
    assert ((messages[:, 1] != 0).sum(dim=-1) == 1).all()
    assert method.omegas(3, 5) == pytest.approx([0.0, 4.0, 0.0])
    with pytest.raises(ValueError, match="agents"):
        method.compressors_for(2)


@pytest.mark.parametrize("spec, match", [
    ("sgd", "method must be one of"),
    ("dcsgd", "needs a compressor"),
    ("dcsgd:sign", "unbiased"),
    ("dcsgd:topk:k=2", "unbiased"),
    ("dsgd:lr=1", "takes no options"),
    ("", "non-empty"),
    ("dcsgd:randk:k=0", "k"),
])
def test_bad_method_specs_name_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        methods.make(spec)
