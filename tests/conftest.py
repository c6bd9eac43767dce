"""Shared fixtures: a non-interactive matplotlib backend and CPU generators; the data sets a
test needs.

A test that reads an installed data set says so with ``@pytest.mark.needs_data("fashion-mnist")``
(specs as ``--data`` takes them: ``fashion-mnist``, ``text``). When one is missing the test
fails with the command that installs it if ``COMPSDE_REQUIRE_DATA=1`` (set by ``make test``,
``make test-slow`` and ``.ci/run``), and is skipped with that command as the reason otherwise
(a plain ``pytest``).
"""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

# The suite's tensors are small: one intra-op thread avoids oversubscribing the 2 CI cores
# (multi-process tests run several ranks at once), which can slow small ops by 10-50x.
torch.set_num_threads(1)

REQUIRE_DATA = "COMPSDE_REQUIRE_DATA"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_data(*specs): the test reads these data sets; missing ones fail the "
                   f"test under {REQUIRE_DATA}=1 (make test), else skip it")


def missing_data_reason(specs: tuple[str, ...]) -> str | None:
    """The one-line reason why data sets ``specs`` cannot be read here (with the install
    command), or None when all are there."""
    from compsde.nn.data import check_data

    try:
        check_data(specs)
    except ValueError as exc:
        return str(exc)
    return None


def require_data(*specs: str) -> None:
    """Fail (under ``COMPSDE_REQUIRE_DATA=1``) or skip the running test when a data set of
    ``specs`` is missing; the message names the command that installs it."""
    reason = missing_data_reason(specs)
    if reason is None:
        return
    if os.environ.get(REQUIRE_DATA) == "1":
        pytest.fail(f"needed data set missing: {reason}", pytrace=False)
    pytest.skip(f"needed data set missing: {reason} ({REQUIRE_DATA}=1, as in make test, "
                f"fails instead)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    specs = tuple(s for mark in item.iter_markers("needs_data") for s in mark.args)
    if specs:
        require_data(*specs)


KILLS: list[tuple[str, bool]] = []     # (test, killed) of every mutant that ran


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the mutants' outcomes (``tests/mutations/conftest.py``'s ``caught``) from the
    reports, which reach the main process also from pytest-xdist's workers."""
    if report.when == "call":
        KILLS.extend((report.nodeid, bool(value)) for name, value in report.user_properties
                     if name == "mutation_killed")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if KILLS:
        killed = sum(ok for _, ok in KILLS)
        terminalreporter.write_line(
            f"mutation kill rate: {killed}/{len(KILLS)} ({100 * killed / len(KILLS):.0f} %)")
        for nodeid, ok in KILLS:
            if not ok:
                terminalreporter.write_line(f"  survived: {nodeid}")


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
