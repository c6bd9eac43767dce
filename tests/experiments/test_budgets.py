"""Every named model-error budget covers the first-order model's bias, computed from the theory
alone (exact discrete recursion vs first-order formula, THEORY.md §4) at the settings it judges."""

from __future__ import annotations

from compsde.experiments import demo, fig3, fig5
from compsde.theory import QuadraticModel, stationary_loss


def test_demo_ratio_budget_covers_the_exact_discrete_ratio():
    model = {m: QuadraticModel.from_problem(m, demo.LANDSCAPE, demo.NOISES[0],
                                            lr=demo.SETTINGS["lr"],
                                            agents=demo.SETTINGS["agents"], x0=1.0)
             for m in demo.METHODS[:2]}
    exact = stationary_loss(model[demo.METHODS[1]]) / stationary_loss(model[demo.METHODS[0]])
    first_order = 1 + model[demo.METHODS[1]].omega_mean
    assert abs(exact / first_order - 1) <= demo.RATIO_BUDGET.relative / 2


def test_phase3_budget_covers_the_exact_discrete_level_at_every_agent_count():
    for agents in fig3.AGENTS:
        model = QuadraticModel.from_problem(fig3.RIGHT["method"], fig3.RIGHT["landscape"],
                                            fig3.RIGHT["noise"], lr=fig3.RIGHT["lr"],
                                            agents=agents, x0=fig3.RIGHT["x0"])
        exact, first_order = stationary_loss(model, "discrete"), stationary_loss(model, "sde")
        assert abs(exact / first_order - 1) <= fig3.PHASE3_BUDGET.relative / 2, agents


def test_fig3_stationary_ratio_is_tangent_over_chord():
    assert 1.3 < fig3.STATIONARY_RATIO < 1.4


def test_fig5_phase3_budget_covers_the_exact_discrete_level_at_every_nu():
    for nu in fig5.NUS_SIGN:
        model = fig5._model("dsignsgd", fig5._noise(nu))
        exact, first_order = stationary_loss(model, "discrete"), stationary_loss(model, "sde")
        assert abs(exact / first_order - 1) <= fig5.PHASE3_BUDGET.relative / 2, nu


def test_phase3_budget_covers_unequal_agents():
    method = fig3._unequal_method("dsignsgd")
    model = QuadraticModel.from_problem(method, fig3.UNEQUAL["landscape"], fig3.UNEQUAL["noise"],
                                        lr=fig3.UNEQUAL["lr"], agents=4, x0=0.5)
    exact, first_order = stationary_loss(model, "discrete"), stationary_loss(model, "sde")
    assert abs(exact / first_order - 1) <= fig3.PHASE3_BUDGET.relative / 2


def test_em_budget_covers_the_sde_levels_of_unequal_agents():
    for name, x0 in (("dcsgd", 0.0), ("dsignsgd", 0.5)):
        model = QuadraticModel.from_problem(fig3._unequal_method(name), fig3.UNEQUAL["landscape"],
                                            fig3.UNEQUAL["noise"], lr=fig3.UNEQUAL["lr"],
                                            agents=4, x0=x0)
        exact, sde = stationary_loss(model, "discrete"), stationary_loss(model, "sde")
        assert abs(exact / sde - 1) <= fig3.EM_BUDGET.relative / 2, name
