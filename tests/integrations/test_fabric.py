"""compsde.distributed.register on the ``_FabricModule`` that ``fabric.setup`` returns:
Lightning Fabric (``strategy="ddp"``) on 2 gloo ranks.

One launch of fabric_worker.py serves the tests: every step equals an independent DSignSGD
step, the bytes equal the analytic counts, and a Rand-k run checkpointed with the state
(``fabric.save``/``fabric.load``) and resumed is bitwise the uninterrupted run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from integration_cases import check_ddp_sign_bytes, check_exact_dsignsgd, check_resume, launch


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return launch("fabric_worker.py", tmp_path_factory.mktemp("fabric"))


def test_the_step_is_dsignsgd(ranks):
    check_exact_dsignsgd(ranks)
    check_ddp_sign_bytes(ranks)


def test_a_checkpoint_resume_is_bitwise_the_uninterrupted_run(ranks):
    check_resume(ranks)


def test_register_took_fabrics_own_wrapper(ranks):
    assert ranks[0]["exact"]["wrapper"] == "_FabricModule"


def test_the_step_on_fabrics_fsdp2_model_is_dsignsgd(ranks):
    assert ranks[0]["sharded"]["state"] == "FSDPState"
    check_exact_dsignsgd(ranks, "sharded")
