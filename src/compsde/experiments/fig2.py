"""Figure 2: DCSGD following the scaling rules recovers DSGD(η, B, N); breaking them does not.

THEORY.md §5: DCSGD with an unbiased compressor of variance ω multiplies the gradient noise by
1 + ω, and recovers DSGD(η, B, N) when the batch or the number of agents absorbs it — to first
order ``B̃ = (1+ω)B`` or ``Ñ = (1+ω)N``. §7: the paper shows it on the training loss of a ViT
and a ResNet. The second-order corrections (``ηLω/(2N)``) come from §4's quadratic with every
coordinate at curvature L; on a network only a few Hessian directions are that sharp. At the
end of the quick ResNet reference the top eigenvalue is L ≈ 36
(:func:`compsde.nn.flat.sharpness`, 20 iterations on 1024 examples), so ηLω/(2N) ≈ 0.68 and
the second-order batch rule asks for B̃ = 203 ≈ 13B; a run with it ended at 0.93, 0.20 *below*
the reference (1.13 ± 0.12): it over-compensates. The figure therefore uses the first-order rules.

Each panel (one network) trains, with N agents simulated in one process (:mod:`.deep`):
- the reference DSGD(η, B, N) with S seeds (black);
- green: DCSGD with Rand-k (k = d/4, ω = 3) at ``(η, (1+ω)B, N)`` and at ``(η, B, (1+ω)N)``;
- red: DCSGD at ``(η, B, N)`` (no rule: 1+ω = 4 times the reference's noise), and Rand-k with
  k = d/32 (ω' = 31) at the batch ``(1+ω)B`` of the k = d/4 rule (the rule applied with the
  wrong ω: (1+ω')/(1+ω) = 8 times the reference's noise).
Gaussian gradient noise is injected per agent (σ/√B per coordinate) so that the noise term
dominates, the regime the rules are derived for; its size is set per network as σ√d (the norm
of one sample's injected noise): 300 for the quick ViT, 210 for the quick ResNet (σ ≈ 2.1, 1.5).
Three effects set those sizes, all measured with this module. (1) The rules equate the
*diagonal* of the noise covariance: Rand-k turns the off-diagonal part of the real mini-batch
noise into diagonal noise, and the green runs end *below* the reference by a bias that shrinks
as the isotropic injected noise dominates: on the ViT 0.01–0.14 at σ√d = 140 (seeds 0, 1),
0.03–0.10 at 210 (seeds 0–2; seed 2's agents rule at −0.100 against a tolerance of 0.113) and
0.02–0.08 at 300 (seeds 0–3, tolerances 0.12–0.15, reds ≥ +0.51). (2) At σ√d = 140 and a
k = d/16 "wrong ω" arm (4× the noise) the ViT's red arm landed inside the tolerance for seed 1
(+0.166 vs 0.179), hence the k = d/32 arm (8×). (3) The ResNet, still far from its plateau
after 300 steps, spreads more between reference seeds as the noise grows: at σ√d = 300 the
reference's tolerance rose to 0.30–0.50 and the no-rule arm landed inside it for seeds 1 and 2,
while at 210 all three seeds separate (greens |Δ| ≤ 0.072, reds ≥ +0.46, tolerances 0.23–0.39).
The verdict (:mod:`.deep_figure`): green levels within the 99 % prediction interval of the
reference seeds, red ones outside.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import compressors
from ..executors import Executor
from ..nn.data import check_data
from ..scaling import dcsgd_from_dsgd
from .deep import TrainSpec, data_shape, default_device, model_dimension
from .deep_figure import Arm, Panel, plot_panels, train_panels
from .registry import FigureOutcome, figure

CLAIM = ("DCSGD whose (lr, batch, agents) follow the scaling rules recovers the training loss "
         "of DSGD(lr, B, N); runs that break the rules do not (ViT and ResNet)")


# Out-of-sample judging: the injected noise per network and the rule-breaking arms were chosen
# on seeds 0–3 (ViT) and 0–2 (ResNet), values of ``seed`` whose training seeds were
# 1000·seed + i. ``reproduce --seed S`` trains seeds 1000·(S + SEED_OFFSET) + i, so the default
# S = 0 (and every S < 90) judges the presets on seeds that played no part in choosing them.
PRESET_SEEDS = (0, 1, 2, 3)
SEED_OFFSET = 10

@dataclass(frozen=True)
class Preset:
    """What fig2 trains; ``models`` holds (panel name, model spec, image size) or
    (panel name, model spec, image size, σ√d for that model)."""

    models: tuple[tuple[str, str, int] | tuple[str, str, int, float], ...]
    data: str
    lr: float
    batch: int
    agents: int
    steps: int
    noise_norm: float  # σ·√d: norm of one sample's injected noise, unless a model sets its own
    compressor: str
    strong_compressor: str  # the red "wrong ω" arm: this compressor with the batch rule of ω
    ref_seeds: int
    train_size: int
    eval_size: int
    eval_every: int

    def scaled(self, **changes: Any) -> Preset:
        """A copy with some fields changed (e.g. fewer steps for a smoke run)."""
        return replace(self, **changes)


QUICK = Preset(
    models=(("vit", "vit:dim=32,depth=2,heads=2,patch=7", 0, 300.0),
            ("resnet", "resnet:depth=8,width=8,norm=group", 14, 210.0)),
    data="fashion-mnist", lr=0.05, batch=16, agents=4, steps=300, noise_norm=210.0,
    compressor="randk:ratio=0.25", strong_compressor="randk:ratio=0.03125", ref_seeds=5,
    train_size=8192, eval_size=1024, eval_every=20)
# Paper scale for one GPU: ResNet-18-like (11M parameters) and ViT-S-like (21M) networks on
# full-size Fashion-MNIST (the CIFAR-10 loader needs a user path). Checked end to end on the
# CPU at 2 steps per run (slow tests); the full step count has not been run (no GPU here).
FULL = Preset(
    models=(("vit", "vit:dim=384,depth=12,heads=6,patch=4,mlp=4", 0),
            ("resnet", "resnet:depth=18,width=64,norm=group", 0)),
    data="fashion-mnist", lr=0.05, batch=32, agents=4, steps=3000, noise_norm=210.0,
    compressor="randk:ratio=0.25", strong_compressor="randk:ratio=0.03125", ref_seeds=5,
    train_size=0, eval_size=10000, eval_every=100)
PRESETS = {"quick": QUICK, "full": FULL}


def panel_for(name: str, model: str, image_size: int, p: Preset, seed: int,
              shape: tuple[int, int, int], classes: int,
              noise_norm: float | None = None) -> tuple[Panel, dict[str, Any]]:
    """The arms of one network's panel (σ√d = ``noise_norm``, default the preset's), and the
    numbers behind them."""
    d = model_dimension(model, shape, classes)
    omega = compressors.make(p.compressor).omega(d)
    sigma = (p.noise_norm if noise_norm is None else noise_norm) / math.sqrt(d)
    base = TrainSpec(model=model, data=p.data, method="dsgd", lr=p.lr, batch=p.batch,
                     agents=p.agents, steps=p.steps, noise=sigma, seed=0,
                     image_size=image_size, train_size=p.train_size, eval_size=p.eval_size,
                     eval_every=p.eval_every)
    method = f"dcsgd:{p.compressor}"
    by_batch = dcsgd_from_dsgd(p.lr, p.batch, p.agents, omega, via="batch", first_order=True)
    by_agents = dcsgd_from_dsgd(p.lr, p.batch, p.agents, omega, via="agents",
                                first_order=True)
    b_rule, n_rule = round(by_batch.config.batch), round(by_agents.config.agents)
    strong = compressors.make(p.strong_compressor)
    omega_strong = strong.omega(d)
    first = 1000 * (seed + SEED_OFFSET)
    arms = [Arm("reference", "reference", base.with_(seed=first + i),
                f"DSGD, η={p.lr:g}, B={p.batch}, N={p.agents}")
            for i in range(p.ref_seeds)]
    s = first + p.ref_seeds
    arms += [
        Arm("batch rule", "follows", base.with_(method=method, batch=b_rule, seed=s),
            f"B̃=(1+ω)B={b_rule}"),
        Arm("agents rule", "follows", base.with_(method=method, agents=n_rule, seed=s + 1),
            f"Ñ=(1+ω)N={n_rule}"),
        Arm("no rule", "breaks", base.with_(method=method, seed=s + 2),
            f"B={p.batch}, N={p.agents} kept"),
        Arm("wrong ω", "breaks",
            base.with_(method=f"dcsgd:{strong.spec}", batch=b_rule, seed=s + 3),
            f"ω={omega_strong:.0f} compressor, B̃={b_rule} (its rule: "
            f"{round((1 + omega_strong) * p.batch)})"),
    ]
    size = f"{image_size}×{image_size}" if image_size else "full-size"
    title = (f"{name} (d={d:,} parameters), {p.data} {size}\n{model}; Rand-k k=d/4 "
             f"(ω={omega:.2f}); noise σ/√B, σ={sigma:.3g}")
    return Panel(name, title, arms), {"dimension": d, "omega": omega, "noise": sigma,
                                      "batch_rule": b_rule, "agents_rule": n_rule,
                                      "omega_wrong": omega_strong}


def reproduce(p: Preset, out: Path, *, seed: int = 0, progress: bool = False,
              distributed: bool = False, device: str | None = None,
              jobs: int = 1, executor: Executor | str | None = None) -> FigureOutcome:
    """Train every arm of every panel (cached under ``out/cache/fig2``; ``jobs`` runs at a
    time in worker processes), judge, plot."""
    check_data([p.data])                     # before any run: one line with the install command
    device = device or default_device()
    panels, numbers = [], {}
    for name, model, size, *norm in p.models:
        shape, classes = data_shape(p.data, size)
        panel, info = panel_for(name, model, size, p, seed, shape, classes, *norm)
        panels.append(panel)
        numbers[name] = info
    trained = train_panels(panels, Path(out) / "cache" / "fig2", device=device,
                           distributed=distributed, jobs=jobs, progress=progress,
                           executor=executor, desc="fig2 runs")
    png = plot_panels(panels, Path(out) / "fig2.png",
                      "Figure 2 — DCSGD with the scaling rules (green) recovers DSGD (black); "
                      "breaking them (red) does not", NOTE)
    outcome_panels = {p_.name: p_.judgement for p_ in panels}
    data_out = {"note": NOTE, "preset": asdict(p), "numbers": numbers, **trained,
                "preset_chosen_on_seeds": list(PRESET_SEEDS),
                "training_seeds_from": 1000 * (seed + SEED_OFFSET)}
    return FigureOutcome("fig2", CLAIM, outcome_panels, png, data_out)


NOTE = ("Training loss on a fixed training subset. Gaussian gradient noise is injected per "
        "agent (σ/√B per coordinate) so the noise term dominates — the regime the rules of "
        "THEORY.md §5 address. Green: first-order rules B̃=(1+ω)B, Ñ=(1+ω)N; red: no rule, and "
        "the batch rule of ω=3 used with a k=d/32 compressor (ω=31). "
        "Tolerance: 99% prediction interval of one more reference seed over the last half of "
        "the run (grey band).")


@figure("fig2", CLAIM, data=tuple(dict.fromkeys(p.data for p in PRESETS.values())),
        quick_seconds=312)
def run(out: Path, preset: str = "quick", seed: int = 0, progress: bool = False,
        distributed: bool = False, jobs: int = 1,
        executor: Executor | str | None = None) -> FigureOutcome:
    """Reproduce figure 2 with the ``quick`` or ``full`` preset."""
    return reproduce(PRESETS[preset], out, seed=seed, progress=progress,
                     distributed=distributed, jobs=jobs, executor=executor)
