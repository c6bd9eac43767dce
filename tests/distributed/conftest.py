"""The 8-rank hook launch runs only WORLD8_CASES (8 processes share the machine's cores): the
other cases' tests at 8 ranks are deselected at collection, not skipped."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_cases import WORLD8_CASES

# tests of test_hooks.py about one case that is not a parameter
CASE_OF_TEST = {"test_k_larger_than_bucket_is_a_clear_error_on_every_rank": "k-too-large"}


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case = params.get("name", CASE_OF_TEST.get(item.originalname))
        if (item.path.name == "test_hooks.py" and params.get("launched") == 8
                and case is not None and case not in WORLD8_CASES):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
