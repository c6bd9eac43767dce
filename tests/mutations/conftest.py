"""The mutation suite: every verdict must fail when a known-wrong piece is patched in.

Each test patches one wrong piece into the library (``mutants.py``), runs the smallest command
that carries the verdict covering it, and hands the mutant's verdict to the ``caught`` fixture,
which records it on the test's report and asserts "fail". The same commands on the real code
must say "pass" (``test_real_code_passes`` in each module). ``tests/conftest.py`` collects the
records from the reports (in the main process, also when pytest-xdist runs the tests in worker
processes) and prints the kill rate.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

KILLED = "mutation_killed"     # the user property that carries one mutant's outcome


@pytest.fixture
def caught(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``caught(verdict)``: record the mutant's verdict; the test fails unless it is "fail"."""

    def record(verdict: str) -> None:
        request.node.user_properties.append((KILLED, verdict == "fail"))
        assert verdict == "fail", f"mutant survived: verdict {verdict!r}"

    return record
