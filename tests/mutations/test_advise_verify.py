"""`compsde advise --verify` against a wrong scaling rule patched into the advisor.

The mutant: the rule that matches DSignSGD to the reference loss returns an lr 30× too small
(η_s = η·σ_eff/ℓ with the noise scale's factor applied twice over). The verification runs the
recommended configuration it produced, and its claim (reaching DSGD's loss within the stated
band) must fail; on the real code the same command's claim passes. (An lr too large is not
caught by a short run from the measured point: it descends faster and its higher plateau lies
beyond the run; the claim is one-sided, reaching the loss sooner is no failure.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutants

from compsde.advise import predict
from compsde.cli import main

VERIFY = ["advise", "--model", "mlp:hidden=32", "--data", "synthetic:n=4096,shape=1x8x8",
          "--batch", "16", "--samples", "64", "--warmup", "50", "--curvature-batch", "256",
          "--bandwidth", "1gbit", "--threads", "1", "--verify", "100",
          "--verify-method", "dsignsgd", "--json"]


def sign_lr_rule_thirty_times_small(monkeypatch: Any) -> None:
    """DSignSGD's matched lr 30× too small."""

    def wrong(original: Any) -> Any:
        def match(p: Any, *args: Any, **kwargs: Any) -> tuple:
            knob, mult, agents, lr, pace = original(p, *args, **kwargs)
            return knob, mult, agents, lr / 30 if p.method == "dsignsgd" else lr, pace

        return match

    mutants.mutate(monkeypatch, predict, "_match", wrong)


def claim_verdict(out: Path) -> tuple[int, str, dict]:
    code = main([*VERIFY, "--out", str(out)])
    ver = json.loads((out / "result.json").read_text())["verify"]
    assert code == (0 if ver["verdict"] == "pass" else 1)
    (entry,) = ver["recommendations"]
    assert entry["spec"] == "dsignsgd"
    return code, entry["claim"]["verdict"], entry


def test_real_rule_passes(tmp_path):
    _, verdict, entry = claim_verdict(tmp_path)
    assert verdict == "pass", entry["claim"]


def test_wrong_sign_lr_rule_fails(monkeypatch, caught, tmp_path):
    sign_lr_rule_thirty_times_small(monkeypatch)
    code, verdict, _ = claim_verdict(tmp_path)
    assert code == 1
    caught(verdict)
