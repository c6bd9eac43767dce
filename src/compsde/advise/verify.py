"""``advise --verify STEPS``: run the advice and judge it (THEORY.md §5, §5a, §10).

From the warmed-up model the noise was measured on, the baseline DSGD(η, B, N) and each
recommended configuration run ``STEPS`` steps on the same data, N agents simulated in one
process (:class:`compsde.distributed.AgentSimulator`, the engine of ``train
--simulate-agents``; the batches of agent i from ``ShardSampler(seed, i)``), and two claims are
judged through :mod:`compsde.verdicts`, every tolerance written to ``result.json`` before the
runs:

- **the rule's claim** — the recommended configuration reaches the baseline's loss over the
  last :data:`TAIL` of the run: with ``L₀`` the loss of the starting point on a fixed set of
  training examples and ``L_·`` the mean training loss over the tail, the progress ratio
  ``r = (L₀ − L_rec)/(L₀ − L_base)`` is at least 1 (``L_rec ≤ L_base``), less ``k·se(r)``, less
  :data:`RULE_BUDGET`, less the band the advice itself states: its speed deficit
  ``(1 − speed)⁺`` (``speed = min(rate, drift)`` relative to DSGD: a slower method makes that
  much less progress per step, to first order) and the rule's own first-order error (DCSGD
  ``ηLω/(2N)``; DSignSGD the share of coordinates outside Phase 3 at the matched batch).
  The band is a number fixed from the advice before the runs. Reaching the loss faster than
  predicted is no failure of the advice.
- **the time model** — the predicted in-process step time
  ``N·(t_compute·b + t_encode + t_reduce) + t_decode`` (``b`` the batch multiplier; the agents
  run one after another, each encodes its message; the advice's codec time split into its parts)
  against the median measured step, within :data:`TIME_BUDGET` plus ``k·se``. The network term
  is not exercised in one process (``benchmarks/ddp.py`` checks it).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import compressors, verdicts
from .._checks import check_int
from ..theory import ell
from .codec_time import codec_parts
from .predict import Advice, Prediction

DEFAULT_STEPS = 500
TAIL = 0.25              # the last quarter of the run is "the last part"
BLOCK = 10               # steps per block for the se of a tail mean (autocorrelated losses)
EVAL_EXAMPLES = 4096     # the fixed training examples that give L₀
RULE_BUDGET = verdicts.Budget(
    "first-order progress", 0.25,
    "the stationary losses and speeds are leading-order SDE values at the measured point "
    "(THEORY.md §3, §4); over a run the drift moves with the loss (DSignSGD's φ_j with the "
    "phases) and DSGD pays a second-order ½η²·tr(HΣ)/N that the first-order speed ignores")
TIME_BUDGET = verdicts.Budget(
    "time model", 0.30,
    "compute ∝ batch and a fixed codec time per message (advise's time model, checked against "
    "benchmarks/ddp.py to 30 %)")


@dataclass
class Arm:
    """One configuration to run and what the advice predicts for it (before the run)."""

    role: str                 # "baseline" or "recommended"
    spec: str
    lr: float
    batch: int
    agents: int
    speed: float
    rule_error: float
    step_seconds: float | None
    distributed_step_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recommended_specs(advice: Advice) -> list[str]:
    """The configurations the advice recommends: its choice first, then every other method it
    gives a configuration at the reference loss for (a finite predicted loss)."""
    rec = advice.recommendation
    if rec is None:
        return []
    return [rec["spec"]] + [p.spec for p in advice.predictions
                            if p.finite and p.match_batch is not None and p.spec != rec["spec"]]


def _rule_error(p: Prediction, advice: Advice) -> float:
    """The first-order error of the rule that matched ``p`` (module docstring)."""
    if p.method == "dcsgd" and advice.curvature:
        return p.lr * advice.curvature * (p.omega or 0.0) / (2 * advice.agents)
    if p.method == "dsignsgd" and advice.curvature and p.match_lr and p.match_agents:
        m = advice.measurement
        shrink = (advice.batch / (p.match_batch or advice.batch)) ** m.gamma
        live = m.fit.scale[~m.fit.degenerate] * shrink
        level = ell(None if math.isinf(m.nu) else m.nu)
        y = (advice.curvature * p.match_lr / (4 * p.match_agents * level * live)).sqrt()
        return float((y > 1).double().mean())
    return 0.0


def _step_time(advice: Advice, p: Prediction, agents: int, mult: float) -> float | None:
    """``N·(t_compute·b + t_encode + t_reduce) + t_decode``: the agents run one after another,
    each encodes (and, on the sign reduce-scatter, counts its shard); one decode per step.
    The parts are the advice's codec time split as :func:`.codec_time.codec_parts` measures."""
    if advice.compute_seconds is None:
        return None
    compute = agents * advice.compute_seconds * mult
    if not p.codec_seconds:
        return compute
    comp = None if p.compressor in (None, "sign") else compressors.make(p.compressor)
    parts = codec_parts(p.method, comp, advice.measurement.d, agents)
    total = sum(parts.values())
    if total <= 0:
        return compute + agents * p.codec_seconds
    scale = p.codec_seconds / total
    return compute + scale * (agents * (parts["encode"] + parts["reduce"]) + parts["decode"])


def plan(advice: Advice, methods: list[str] | None = None) -> list[Arm]:
    """The baseline and the recommended configurations with their predictions.

    ``methods`` narrows the recommended ones (ValueError naming ``method`` if one of them was
    not recommended).
    """
    recs = recommended_specs(advice)
    if not recs:
        raise ValueError("verify: the advice recommends nothing (no method has a finite "
                         "predicted stationary loss), there is no claim to run")
    chosen = list(methods) if methods else recs[:1]
    wrong = [s for s in chosen if s not in recs]
    if wrong:
        raise ValueError(f"method {wrong[0]!r} was not recommended; --verify runs the "
                         f"recommended configurations: {', '.join(recs)}")
    base = advice.by_spec("dsgd")
    arms = [Arm("baseline", "dsgd", advice.lr, advice.batch, advice.agents, 1.0, 0.0,
                _step_time(advice, base, advice.agents, 1.0), None)]
    for spec in chosen:
        p = advice.by_spec(spec)
        mult = (p.match_compute_seconds / advice.compute_seconds
                if p.match_compute_seconds is not None and advice.compute_seconds else
                p.match_batch / advice.batch if p.match_batch else 1.0)
        agents = p.match_agents or advice.agents
        dist = None
        if advice.compute_seconds is not None:
            dist = advice.compute_seconds * mult + (p.codec_seconds or 0.0) + \
                (p.comm_seconds or 0.0)
        arms.append(Arm("recommended", spec, float(p.match_lr or p.lr),
                        int(p.match_batch or advice.batch), int(agents), float(p.speed),
                        _rule_error(p, advice), _step_time(advice, p, agents, mult), dist))
    return arms


def band(arm: Arm) -> float:
    """The band the advice states for ``arm``: speed deficit plus rule error (docstring)."""
    return max(0.0, 1.0 - arm.speed) + arm.rule_error


def bands(arms: list[Arm]) -> dict[str, dict[str, Any]]:
    """The tolerances of every claim, fixed before the runs (module docstring)."""
    out = {}
    for arm in arms[1:]:
        out[arm.spec] = {
            "claim": {"quantity": "progress ratio (L₀ − L_rec)/(L₀ − L_base)",
                      "relation": "at_least", "predicted": 1.0, "k": verdicts.K_DEFAULT,
                      "budget": RULE_BUDGET.to_dict(), "speed": arm.speed,
                      "rule_first_order_error": arm.rule_error, "band": band(arm)},
            "time": {"quantity": "in-process step seconds", "predicted": arm.step_seconds,
                     "budget": TIME_BUDGET.to_dict()}}
    out["dsgd"] = {"time": {"quantity": "in-process step seconds",
                            "predicted": arms[0].step_seconds, "budget": TIME_BUDGET.to_dict()}}
    return out


def eval_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy on ``(x, y)`` and its se over the examples."""
    with torch.no_grad():
        losses = F.cross_entropy(model(x), y, reduction="none").double()
    return float(losses.mean()), float(losses.std() / math.sqrt(losses.numel()))


def run_arm(model: nn.Module, dataset: Any, arm: Arm, steps: int, *, seed: int,
            device: torch.device | str = "cpu", inject: str | None = None) -> dict[str, Any]:
    """``steps`` steps of ``arm`` from ``model`` (left unchanged): losses and step times.

    ``inject``: the noise law ``advise --inject`` added to the measured gradients, added to
    every agent's gradient here too (the simulator's ``noise=``)."""
    import copy

    from ..distributed import AgentSimulator
    from ..distributed.agents import ddp_layout
    from ..nn.data import ShardSampler

    net = copy.deepcopy(model)
    net.train()
    method = arm.spec if arm.spec != "dsgd" else "dsgd"
    sim = AgentSimulator(method, arm.agents, seed=seed, noise=inject)
    layout = ddp_layout(net)
    named = {n: p for n, p in net.named_parameters() if p.requires_grad}
    size = len(dataset.y_train)
    samplers = [ShardSampler(size, i, arm.agents, arm.batch, seed) for i in range(arm.agents)]
    losses: list[float] = []
    times: list[float] = []
    failed = None
    for step in range(steps):
        began = time.perf_counter()
        grads = {n: torch.empty((arm.agents, *p.shape), dtype=p.dtype, device=p.device)
                 for n, p in named.items()}
        total = 0.0
        for agent in range(arm.agents):
            x, y = dataset.train_batch(samplers[agent].indices(step), device)
            net.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            total += float(loss.detach())
            for n, p in named.items():
                grads[n][agent].copy_(p.grad if p.grad is not None else torch.zeros_like(p))
        if not math.isfinite(total):
            failed = f"loss became {total} at step {step}"
            break
        try:
            mean = sim.reduce(grads, layout)
        except (ValueError, RuntimeError) as exc:
            failed = f"step {step}: {exc}"
            break
        with torch.no_grad():
            for n, p in named.items():
                p.sub_(mean[n], alpha=arm.lr)
        times.append(time.perf_counter() - began)
        losses.append(total / arm.agents)
    return {"losses": losses, "step_seconds": times, "failed": failed, "model": net}


def tail_mean(losses: list[float], steps: int) -> tuple[float, float]:
    """Mean of the last :data:`TAIL` of ``steps`` losses and its se from blocks of
    :data:`BLOCK` steps (inf when the run stopped early)."""
    if len(losses) < steps:
        return math.inf, 0.0
    tail = losses[-max(BLOCK * 2, round(TAIL * steps)):]
    blocks = [sum(tail[i:i + BLOCK]) / BLOCK for i in range(0, len(tail) - BLOCK + 1, BLOCK)]
    se = statistics.stdev(blocks) / math.sqrt(len(blocks)) if len(blocks) > 1 else 0.0
    return sum(tail) / len(tail), se


def judge(arms: list[Arm], runs: list[dict[str, Any]], start: tuple[float, float],
          steps: int) -> list[dict[str, Any]]:
    """One entry per recommended arm: its verdict, the claim's and the time model's checks."""
    l0, se0 = start
    base_mean, base_se = tail_mean(runs[0]["losses"], steps)
    base_time = _time_check(arms[0], runs[0])
    out = []
    for arm, run in zip(arms[1:], runs[1:], strict=True):
        if _same(arm, arms[0]):         # the advice keeps the baseline: only its time
            checks = [c for c in (_time_check(arm, run),) if c is not None]
            if not checks:
                continue
            entry = verdicts.panel(checks, rule=f"{arm.spec} is the baseline: the time model")
            entry.update({"spec": arm.spec, "config": arm.to_dict(), "claim": None,
                          "time": checks[0], "baseline_time": base_time})
            out.append(entry)
            continue
        rec_mean, rec_se = tail_mean(run["losses"], steps)
        drop = l0 - base_mean
        rule = (f"{arm.spec} at lr {arm.lr:.4g}, batch {arm.batch}, agents {arm.agents} "
                f"reaches DSGD's loss over the last {TAIL:.0%}, within the advice's band "
                f"{band(arm):.3g} (speed {arm.speed:.3g}, rule error {arm.rule_error:.2g})")
        if not math.isfinite(rec_mean):
            claim = verdicts.check("progress ratio (L₀ − L_rec)/(L₀ − L_base)", -math.inf, 1.0,
                                   relation="at_least", rule=rule)
        elif drop <= 0 or not math.isfinite(drop):  # DSGD made no progress (or diverged)
            claim = verdicts.check("tail loss L_rec − L_base (DSGD made no progress)",
                                   rec_mean - base_mean, 0.0, relation="at_most",
                                   se=math.hypot(rec_se, base_se), rule=rule)
        else:
            ratio = (l0 - rec_mean) / drop
            se = math.sqrt(rec_se**2 + (ratio * base_se) ** 2 + ((1 - ratio) * se0) ** 2) / drop
            claim = verdicts.check("progress ratio (L₀ − L_rec)/(L₀ − L_base)", ratio, 1.0,
                                   relation="at_least", se=se, budget=RULE_BUDGET,
                                   absolute=band(arm), rule=rule)
        claim.update({"L0": l0, "L0_se": se0, "baseline_tail": base_mean,
                      "baseline_tail_se": base_se, "recommended_tail": rec_mean,
                      "recommended_tail_se": rec_se, "failed": run["failed"]})
        checks = [claim]
        timing = _time_check(arm, run)
        if timing is not None:
            checks.append(timing)
        entry = verdicts.panel(checks, rule=f"{arm.spec}: the rule's claim and the time model")
        entry.update({"spec": arm.spec, "config": arm.to_dict(), "claim": claim,
                      "time": timing, "baseline_time": base_time})
        out.append(entry)
    return out


def _same(arm: Arm, base: Arm) -> bool:
    return (arm.spec, arm.lr, arm.batch, arm.agents) == (base.spec, base.lr, base.batch,
                                                         base.agents)


def _time_check(arm: Arm, run: dict[str, Any]) -> dict[str, Any] | None:
    times = run["step_seconds"][min(5, len(run["step_seconds"]) // 10):]
    if arm.step_seconds is None or len(times) < 2:
        return None
    median = statistics.median(times)
    spread = statistics.median(abs(t - median) for t in times) * 1.4826
    se = 1.2533 * spread / math.sqrt(len(times))
    return verdicts.check("in-process step seconds", median, arm.step_seconds, se=se,
                          budget=TIME_BUDGET,
                          rule=f"{arm.spec}: N·(t_compute·b + t_encode + t_reduce) + t_decode "
                               f"predicts the measured step of {arm.agents} simulated agents")


def check_steps(steps: int) -> int:
    """``steps`` for ``--verify``: an integer in [20, 100000] (a tail of two blocks)."""
    return check_int("--verify", steps, minimum=2 * BLOCK, maximum=100_000)


def start_loss(model: nn.Module, dataset: Any, seed: int,
               device: torch.device | str = "cpu") -> tuple[float, float]:
    """L₀ on :data:`EVAL_EXAMPLES` training examples drawn with ``seed``, in training mode
    like the runs' losses (normalisation layers on batch statistics), on a copy of ``model``."""
    import copy

    n = len(dataset.y_train)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    x, y = dataset.train_batch(index[:min(EVAL_EXAMPLES, n)], device)
    net = copy.deepcopy(model)
    net.train()
    return eval_loss(net, x, y)


LAUNCHERS = ("inprocess", "torchrun")


def verify(advice: Advice, model: nn.Module, dataset: Any, steps: int, *, seed: int = 0,
           methods: list[str] | None = None, device: torch.device | str = "cpu",
           before_runs: Any = None, inject: str | None = None, launcher: str = "inprocess",
           model_spec: str | None = None, data_spec: str | None = None) -> dict[str, Any]:
    """Plan, fix the bands (``before_runs(bands)`` is called with them), run, judge.

    ``launcher="torchrun"`` runs every arm as real ranks (:mod:`.verify_torchrun`; needs
    ``model_spec`` and ``data_spec``); its time model is then not judged."""
    from .._checks import check_choice

    steps = check_steps(steps)
    check_choice("launcher", launcher, LAUNCHERS)
    arms = plan(advice, methods)
    if launcher == "torchrun":
        if model_spec is None or data_spec is None:
            raise ValueError("launcher 'torchrun' needs model_spec and data_spec (the --model "
                             "and --data the ranks build)")
        arms = [replace(a, step_seconds=None) for a in arms]    # loopback, not the link
    fixed = bands(arms)
    if before_runs is not None:
        before_runs({"steps": steps, "arms": [a.to_dict() for a in arms], "bands": fixed})
    start = start_loss(model, dataset, seed, device)
    runs: list[dict[str, Any]] = []
    for arm in arms:
        same = runs[0] if runs and _same(arm, arms[0]) else None
        if same is None and launcher == "torchrun":
            from .verify_torchrun import run_arm_torchrun

            same = run_arm_torchrun(model, arm, steps, model_spec=model_spec,
                                    data_spec=data_spec, seed=seed, inject=inject,
                                    device=str(device))
        runs.append(same or run_arm(model, dataset, arm, steps, seed=seed, device=device,
                                    inject=inject))
    entries = judge(arms, runs, start, steps)
    return {"steps": steps, "arms": [a.to_dict() for a in arms], "bands": fixed,
            "L0": start[0], "L0_se": start[1], "launcher": launcher,
            "runs": [{"spec": a.spec, "losses": r["losses"], "failed": r["failed"],
                      "median_step_seconds": statistics.median(r["step_seconds"])
                      if r["step_seconds"] else None} for a, r in zip(arms, runs, strict=True)],
            "recommendations": entries,
            # nothing to judge: the advice keeps DSGD and (torchrun) its time is not judged
            "verdict": ("not judged" if not entries else
                        "pass" if all(e["verdict"] == "pass" for e in entries) else "fail"),
            "_internal": (arms, runs, start)}


def verify_lines(outcome: dict[str, Any]) -> str:
    """One block per recommendation: its verdict, the claim and the time model."""
    lines = [f"verify ({outcome['steps']} steps from the measured point, L₀ = "
             f"{outcome['L0']:.4g}): {outcome['verdict'].upper()}"]
    for e in outcome["recommendations"]:
        c = e["claim"]
        if c is None:
            lines.append(f"  {e['spec']}: {e['verdict']} — the baseline itself, no claim")
        else:
            lines.append(
                f"  {e['spec']}: {e['verdict']} — progress ratio {c['measured']:.3g}, at least "
                f"{c['predicted'] - c['tolerance']:.3g} claimed (last {TAIL:.0%}: "
                f"{c['recommended_tail']:.4g} vs DSGD {c['baseline_tail']:.4g})"
                + (f"; run stopped: {c['failed']}" if c.get("failed") else ""))
        for name, t in (("time", e["time"]), ("DSGD time (reported, not judged)",
                                               e["baseline_time"])):
            if t is not None:
                lines.append(f"    {name}: measured {1e3 * t['measured']:.3g} ms/step vs "
                             f"predicted {1e3 * t['predicted']:.3g} ± {1e3 * t['tolerance']:.2g}"
                             f" ({t['verdict']})")
    return "\n".join(lines)
