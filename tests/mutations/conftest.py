"""The mutation suite: every verdict must fail when a known-wrong piece is patched in.

Each test patches one wrong piece into the library (``mutants.py``), runs the smallest command
that carries the verdict covering it, and hands the mutant's verdict to the ``caught`` fixture,
which records it and asserts "fail". The same commands on the real code must say "pass"
(``test_real_code_passes`` in each module). The terminal summary prints the kill rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

KILLS: list[tuple[str, bool]] = []


@pytest.fixture
def caught(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``caught(verdict)``: record the mutant's verdict; the test fails unless it is "fail"."""

    def record(verdict: str) -> None:
        KILLS.append((request.node.nodeid, verdict == "fail"))
        assert verdict == "fail", f"mutant survived: verdict {verdict!r}"

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if KILLS:
        killed = sum(ok for _, ok in KILLS)
        terminalreporter.write_line(
            f"mutation kill rate: {killed}/{len(KILLS)} ({100 * killed / len(KILLS):.0f} %)")
        for nodeid, ok in KILLS:
            if not ok:
                terminalreporter.write_line(f"  survived: {nodeid}")
