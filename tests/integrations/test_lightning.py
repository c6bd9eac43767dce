"""compsde.lightning.Compression in a Lightning Trainer (DDPStrategy) on 2 gloo ranks.

One launch of lightning_worker.py (about 20 s on 2 cores) serves the tests: the update equals
an independent DSignSGD step, bytes equal the analytic counts and what reaches the logger, and
a checkpoint resume is bitwise the uninterrupted run. In-process tests cover bad input.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from integration_cases import (
    LR,
    check_ddp_sign_bytes,
    check_exact_dsignsgd,
    check_resume,
    fp32_allreduce_bytes,
    launch,
    local_gradient,
    n_params,
    sign_bits_bytes,
)

from compsde.lightning import Compression, check_strategy, optimizer_note


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return launch("lightning_worker.py", tmp_path_factory.mktemp("lightning"))


def test_the_trainer_step_is_dsignsgd(ranks):
    check_exact_dsignsgd(ranks)
    check_ddp_sign_bytes(ranks)


def test_the_logger_receives_the_counters_every_log_every_n_steps(ranks):
    run = ranks[0]["exact"]
    with open(f"{run['csv']}/metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["compsde/step"]]
    steps = [int(float(row["compsde/step"])) for row in rows]
    assert steps == [2, 4, 6, 8]                      # log_every_n_steps=2, 8 steps
    d = n_params()
    for row, step in zip(rows, steps, strict=True):
        assert float(row["compsde/bytes_sent"]) == sign_bits_bytes(d, 2, step)
        assert int(row["step"]) == step - 1           # Lightning's own index for that step
    assert run["metrics"]["compsde/bytes_sent"] == run["counters"]["bytes_sent"]
    ratio = sign_bits_bytes(d, 2, 1) / fp32_allreduce_bytes(d, 2, 1)     # ≈ 1/32
    assert run["metrics"]["compsde/ratio"] == pytest.approx(ratio, rel=1e-12)


def test_a_checkpoint_resume_is_bitwise_the_uninterrupted_run(ranks):
    check_resume([rank["resume"] for rank in ranks])
    saved = ranks[0]["resume"]["saved"]
    assert saved["step"] == 4 and saved["method_spec"] == "dcsgd:randk:ratio=0.25"


def test_without_priming_the_resumed_run_differs(ranks):
    # DDP's first backward reduces in parameter order, later ones in gradient order: a run
    # resumed unprimed forms other Rand-k messages at its first step (the resume check bites)
    record = ranks[0]["resume-noprime"]
    assert not torch.equal(record["straight"]["params"], record["resumed"]["params"])
    assert record["layout"][0][0].startswith("net.2")     # gradient order: last layer first


def test_bad_methods_and_options_fail_at_construction():
    with pytest.raises(ValueError, match="method"):
        Compression("adam")
    with pytest.raises(ValueError, match="unknown bogus"):
        Compression("dsignsgd", bogus=1)
    with pytest.raises(ValueError, match="sign_wire"):
        Compression("dsignsgd", sign_wire="morse")


def test_unsupported_strategies_are_refused_before_training():
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    with pytest.raises(ValueError, match=r"FSDP1.*ModelParallelStrategy"):
        check_strategy(FSDPStrategy())
    with pytest.raises(ValueError, match=r"DeepSpeedStrategy.*DDPStrategy"):
        check_strategy(DeepSpeedStrategy.__new__(DeepSpeedStrategy))


def test_a_single_process_trainer_fails_before_the_first_step(tmp_path):
    import lightning.pytorch as pl
    from lightning_worker import Regression

    module = Regression()
    before = [p.detach().clone() for p in module.parameters()]
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[Compression("dsignsgd")])
    with pytest.raises(ValueError, match=r"one process.*torchrun --nproc-per-node"):
        trainer.fit(module)
    assert all(torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))


def test_optimizers_other_than_plain_sgd_are_noted():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert optimizer_note([torch.optim.SGD(params, lr=0.1)]) == ""
    assert "Adam" in optimizer_note([torch.optim.Adam(params)])
    assert "momentum" in optimizer_note([torch.optim.SGD(params, lr=0.1, momentum=0.9)])
    assert "weight_decay" in optimizer_note([torch.optim.SGD(params, lr=0.1, weight_decay=1)])


def test_gradient_accumulation_reduces_once_per_optimizer_step(ranks):
    runs = [rank["accumulate"] for rank in ranks]
    assert runs[0]["global_step"] == runs[0]["step"] == 4        # 8 micro-batches, k = 2
    assert runs[0]["counters"]["bytes_sent"] == sign_bits_bytes(n_params(), 2, 4)
    micro = list(zip(*(run["steps"] for run in runs), strict=True))
    for first, second in zip(micro[::2], micro[1::2], strict=True):
        before = first[0][0]
        assert torch.equal(second[0][0], first[0][3])              # no step in between
        assert torch.equal(first[0][3], before)
        # each rank's message: the sign of its gradient summed over its two micro-batches
        signs = [torch.where(local_gradient(before, a[1], a[2])
                             + local_gradient(before, b[1], b[2]) >= 0, 1.0, -1.0)
                 for a, b in zip(first, second, strict=True)]
        assert torch.equal(second[0][3], before - LR * torch.stack(signs).mean(0))
