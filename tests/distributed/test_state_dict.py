"""``state_dict()`` / ``load_state_dict()`` of the method states (in process, no collectives):
a round trip restores seed, step and counters; a state of another method, world size or wire
is refused with the setting named."""

from __future__ import annotations

import pytest
import torch

from compsde.distributed import AgentSimulator


def _stepped(spec: str, agents: int = 2, **options) -> AgentSimulator:
    sim = AgentSimulator(spec, agents, seed=5, **options)
    grads = torch.randn(agents, 300, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        sim.reduce_bucket(grads.clone(), 0)
        sim.step += 1
    return sim


def test_round_trip_restores_seed_step_and_counters():
    saved = _stepped("dcsgd:randk:ratio=0.1").state_dict()
    fresh = AgentSimulator("dcsgd:randk:ratio=0.1", 2, seed=0)
    fresh.load_state_dict(saved)
    assert (fresh.seed, fresh.step) == (5, 3)
    assert fresh.counters() == _stepped("dcsgd:randk:ratio=0.1").counters()
    grads = torch.randn(2, 300, generator=torch.Generator().manual_seed(9))
    again = _stepped("dcsgd:randk:ratio=0.1")
    assert torch.equal(fresh.reduce_bucket(grads.clone(), 0), again.reduce_bucket(grads, 0))
    assert fresh.state_dict() == again.state_dict()


@pytest.mark.parametrize(("other", "named"), [
    (lambda: AgentSimulator("dsignsgd", 2), "method_spec"),
    (lambda: AgentSimulator("dcsgd:randk:ratio=0.1", 3), "world"),
    (lambda: AgentSimulator("dcsgd:randk:ratio=0.1", 2, randomness="independent"),
     "randomness"),
])
def test_a_state_of_other_settings_is_refused(other, named):
    saved = _stepped("dcsgd:randk:ratio=0.1").state_dict()
    with pytest.raises(ValueError, match=f"^state was made with {named}="):
        other().load_state_dict(saved)


def test_not_a_state_dict_is_refused():
    with pytest.raises(ValueError, match="state must be a dict from state_dict"):
        AgentSimulator("dsgd", 2).load_state_dict([1, 2])
