"""The deep runs refuse what they cannot run of the sign family (THEORY.md §8): a vote of one
agent; a vote of several agents and Signum's per-agent momentum (a stateful method) are
accepted."""

from __future__ import annotations

import pytest

from compsde.experiments.deep import TrainSpec

KW = dict(model="mlp", data="digits", lr=0.1, batch=8, steps=2)


def test_a_one_agent_vote_is_refused_before_any_work_and_signum_is_accepted():
    assert TrainSpec(method="signum:beta=0.9", agents=2, **KW).method == "signum:beta=0.9"
    with pytest.raises(ValueError, match="agents must be at least 2"):
        TrainSpec(method="dsignsgd:vote=majority", agents=1, **KW)
    assert TrainSpec(method="dsignsgd:vote=majority", agents=3, **KW).agents == 3
