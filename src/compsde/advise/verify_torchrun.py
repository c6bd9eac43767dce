"""``advise --verify STEPS --launcher torchrun``: the arms of :mod:`.verify` as real ranks.

Each arm (the baseline DSGD and each recommended configuration) runs as ``torchrun
--nproc-per-node N -m compsde.distributed.train`` from the same warmed-up parameters
(``--init-from``), its N ranks drawing the batches :func:`.verify.run_arm` draws (``ShardSampler
(seed, rank)``) and reducing through the DDP hook; the per-step mean loss over the ranks comes
back from the trainer's ``result.json``. The rule's claim is judged as in process. The time
model is not: the ranks share this machine's cores and talk over its loopback, not over the
``--bandwidth`` link the advice priced (``benchmarks/ddp.py`` checks that model on emulated
links).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .verify import Arm

LAUNCH_TIMEOUT_S = 1800.0


def torchrun_path() -> str:
    """The ``torchrun`` beside this Python (``ValueError`` when it is missing)."""
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which(
        "torchrun")
    if found is None:
        raise ValueError("--launcher torchrun needs torchrun (installed with torch) beside "
                         f"{sys.executable}")
    return found


def run_arm_torchrun(model: nn.Module, arm: Arm, steps: int, *, model_spec: str,
                     data_spec: str, seed: int, inject: str | None = None,
                     device: str = "cpu", timeout: float = LAUNCH_TIMEOUT_S) -> dict[str, Any]:
    """``steps`` steps of ``arm`` on ``arm.agents`` torchrun ranks from ``model``'s parameters:
    ``{"losses", "step_seconds", "failed"}`` as :func:`.verify.run_arm` returns them."""
    with tempfile.TemporaryDirectory(prefix="compsde-verify-") as tmp:
        init = Path(tmp) / "init.pt"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, init)
        out = Path(tmp) / "run"
        command = [torchrun_path(), "--nproc-per-node", str(arm.agents), "-m",
                   "compsde.distributed.train", "--model", model_spec, "--data", data_spec,
                   "--method", arm.spec, "--lr", repr(arm.lr), "--batch", str(arm.batch),
                   "--steps", str(steps), "--seed", str(seed), "--init-from", str(init),
                   "--log-every", "1", "--device", device, "--threads", "1",
                   "--no-progress", "--out", str(out)]
        if inject:
            command += ["--noise", inject]
        env = {k: v for k, v in os.environ.items()
               if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"losses": [], "step_seconds": [], "failed": f"torchrun did not finish "
                    f"within {timeout:g} s"}
        result_file = out / "result.json"
        if done.returncode != 0 or not result_file.is_file():
            lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            why = lines[-1] if lines else (done.stderr.strip().splitlines() or ["?"])[-1]
            return {"losses": [], "step_seconds": [],
                    "failed": f"torchrun exited {done.returncode}: {why[:300]}"}
        result = json.loads(result_file.read_text())
    losses = [float(v) for v in result["loss"]]
    return {"losses": losses, "step_seconds": [result["step_ms"] / 1e3] * len(losses),
            "failed": None if len(losses) == steps else f"{len(losses)} of {steps} steps"}
