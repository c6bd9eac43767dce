"""Figure 4: DSignSGD run with its scaling rule recovers DSignSGD(η, B, N); breaking it does not.

THEORY.md §5: DSignSGD(η, B, N) is kept by ``(κη, B, κN)`` under convention (T) — equal SDE
time t = kη, so κ times fewer steps — and by ``(κη, B/κ², κ²N)`` under (K) — equal iteration
count (the (K) rule uses the Phase-3 drift ∝ η√B/σ, §3, i.e. noise-dominated gradients).

Per network two panels share the reference DSignSGD(η, B, N) (S seeds, black):
- (T), κ = ``kappa_time`` (3/2), x-axis the reference's step at equal t: green ``(κη, B, κN)``
  for K/κ steps; red ``(4η, B, N)`` for K/4 steps — the (T) rule at κ = 4 with its 4N agents
  left out (4× the diffusion: the break of the red (K) arm);
- (K), κ = ``kappa`` (2), x-axis the step: green ``(κη, B/κ², κ²N)``; red ``(κη, B/κ², N)``
  (the agents left out: κ²× the per-step noise variance).
The (T) rule multiplies the per-step move by κ, so its runs carry a discretisation bias that the
reference's do not. On the quick ViT at κ = 2 it was +0.05 to +0.08 (eight extra seeds per
set, reference sd 0.02–0.035) and did not shrink when η was halved at equal t, nor with more
noise, agents or time, so no first-order budget can be derived for it; at κ = 3/2 it was
+0.023 ± 0.017. With κ = 2 the judged ViT (T) arm passed by 0.001, hence κ = 3/2 for (T)
(THEORY.md §10 has the numbers and the seeds).
Gaussian gradient noise is injected per agent (σ/√B per coordinate) so that gradients are
noise-dominated (Phase 3), the regime of the rules. The verdict is that of
:mod:`.deep_figure` (99 % prediction interval of the reference seeds).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..executors import Executor
from ..nn.data import check_data
from ..scaling import dsignsgd_rules
from .deep import TrainSpec, data_shape, default_device, model_dimension
from .deep_figure import Arm, Panel, plot_panels, train_panels
from .registry import FigureOutcome, figure

CLAIM = ("DSignSGD run with its scaling rule, (κη, B, κN) at equal time or (κη, B/κ², κ²N) at "
         "equal steps, recovers the training loss of DSignSGD(η, B, N); runs that break the "
         "rule do not (ViT and ResNet)")


# Out-of-sample judging: the rule-breaking arms, step counts and κ of the (T) panel were chosen
# on these values of ``seed`` (training seeds 1000·seed + i; 10 was the judged set of the κ = 2
# preset). ``reproduce --seed S`` trains seeds 1000·(S + SEED_OFFSET) + i, so the default
# S = 0 (and every S ≥ 0) judges the presets on seeds that played no part in choosing them.
PRESET_SEEDS = (0, 1, 2, 3, 4, 5, 6, 7, 10)
SEED_OFFSET = 20


@dataclass(frozen=True)
class Preset:
    """What fig4 trains; ``models`` is a tuple of (panel name, model spec, image size)."""

    models: tuple[tuple[str, str, int], ...]
    data: str
    lr: float
    batch: int
    agents: int
    steps: int
    kappa: int
    kappa_time: float
    noise_norm: float
    ref_seeds: int
    train_size: int
    eval_size: int
    eval_every: int

    def __post_init__(self) -> None:
        k2 = self.kappa**2
        if self.batch % k2 or self.steps % k2 or self.eval_every % k2:
            raise ValueError(f"kappa must be such that kappa² divides batch, steps and "
                             f"eval_every; got kappa={self.kappa}, batch={self.batch}, "
                             f"steps={self.steps}, eval_every={self.eval_every}")
        kt = self.kappa_time
        counts = (self.steps / kt, self.eval_every / kt, self.agents * kt)
        if kt <= 1 or any(abs(c - round(c)) > 1e-9 for c in counts):
            raise ValueError(f"kappa_time must be > 1 and such that steps/κ, eval_every/κ and "
                             f"κ·agents are whole numbers; got kappa_time={kt}, "
                             f"steps={self.steps}, eval_every={self.eval_every}, "
                             f"agents={self.agents}")

    def scaled(self, **changes: Any) -> Preset:
        return replace(self, **changes)


QUICK = Preset(
    models=(("vit", "vit:dim=32,depth=2,heads=2,patch=7", 0),
            ("resnet", "resnet:depth=8,width=8,norm=group", 14)),
    data="fashion-mnist", lr=0.0075, batch=16, agents=4, steps=720, kappa=2, kappa_time=1.5,
    noise_norm=140.0, ref_seeds=5, train_size=8192, eval_size=1024, eval_every=48)
# Paper scale for one GPU: ResNet-18-like (11M parameters) and ViT-S-like (21M) networks on
# full-size Fashion-MNIST (the CIFAR-10 loader needs a user path). Checked end to end on the
# CPU at 2 steps per run (slow tests); the full step count has not been run (no GPU here).
FULL = Preset(
    models=(("vit", "vit:dim=384,depth=12,heads=6,patch=4,mlp=4", 0),
            ("resnet", "resnet:depth=18,width=64,norm=group", 0)),
    data="fashion-mnist", lr=0.0075, batch=32, agents=4, steps=7200, kappa=2, kappa_time=1.5,
    noise_norm=140.0, ref_seeds=5, train_size=0, eval_size=10000, eval_every=120)
PRESETS = {"quick": QUICK, "full": FULL}


def panels_for(name: str, model: str, image_size: int, p: Preset, seed: int,
               shape: tuple[int, int, int], classes: int) -> tuple[list[Panel], dict[str, Any]]:
    """The (T) and (K) panels of one network, and the numbers behind them."""
    d = model_dimension(model, shape, classes)
    sigma = p.noise_norm / math.sqrt(d)
    k, kt = p.kappa, p.kappa_time
    base = TrainSpec(model=model, data=p.data, method="dsignsgd", lr=p.lr, batch=p.batch,
                     agents=p.agents, steps=p.steps, noise=sigma, seed=0,
                     image_size=image_size, train_size=p.train_size, eval_size=p.eval_size,
                     eval_every=p.eval_every)
    rule_t = dsignsgd_rules(p.lr, p.batch, p.agents, kt, "T")
    rule_k = dsignsgd_rules(p.lr, p.batch, p.agents, k, "K")
    lr_t, n_t = rule_t.config.lr, round(rule_t.config.agents)
    lr_k, b_k, n_k = rule_k.config.lr, round(rule_k.config.batch), round(rule_k.config.agents)
    short = {"steps": round(p.steps / kt), "eval_every": round(p.eval_every / kt)}
    shorter = {"steps": p.steps // k**2, "eval_every": p.eval_every // k**2}
    first = 1000 * (seed + SEED_OFFSET)
    refs = [Arm("reference", "reference", base.with_(seed=first + i),
                f"DSignSGD, η={p.lr:g}, B={p.batch}, N={p.agents}") for i in range(p.ref_seeds)]
    s = first + p.ref_seeds
    t_arms = [
        Arm("(T) rule", "follows", base.with_(lr=lr_t, agents=n_t, seed=s, **short),
            f"(κη, B, κN) = ({lr_t:g}, {p.batch}, {n_t}), {short['steps']} steps", kt),
        Arm("agents kept", "breaks", base.with_(lr=k**2 * p.lr, seed=s + 1, **shorter),
            f"({k**2}η, B, N) = ({k**2 * p.lr:g}, {p.batch}, {p.agents}), {shorter['steps']} steps",
            k**2),
    ]
    k_arms = [
        Arm("(K) rule", "follows", base.with_(lr=lr_k, batch=b_k, agents=n_k, seed=s + 2),
            f"(κη, B/κ², κ²N) = ({lr_k:g}, {b_k}, {n_k})"),
        Arm("agents kept", "breaks", base.with_(lr=lr_k, batch=b_k, seed=s + 3),
            f"(κη, B/κ², N) = ({lr_k:g}, {b_k}, {p.agents})"),
    ]
    size = f"{image_size}×{image_size}" if image_size else "full-size"
    head = (f"{name} (d={d:,} parameters), {p.data} {size}\n{model}; noise σ/√B, "
            f"σ={sigma:.3g}")
    panels = [Panel(f"{name} (T)", f"{head}\n(T) equal SDE time t = kη, κ={kt:g}", refs + t_arms,
                    xlabel=f"t / η = reference step (rule runs: k·κ, κ={kt:g})"),
              Panel(f"{name} (K)", f"{head}\n(K) equal iteration count, κ={k:g}", refs + k_arms,
                    xlabel="step k")]
    return panels, {"dimension": d, "noise": sigma, "kappa": k, "kappa_time": kt,
                    "T_rule": asdict(rule_t.config), "K_rule": asdict(rule_k.config)}


def reproduce(p: Preset, out: Path, *, seed: int = 0, progress: bool = False,
              distributed: bool = False, device: str | None = None,
              jobs: int = 1, executor: Executor | str | None = None) -> FigureOutcome:
    """Train every arm (cached under ``out/cache/fig4``; ``jobs`` runs at a time in worker
    processes), judge each panel, plot."""
    check_data([p.data])                     # before any run: one line with the install command
    device = device or default_device()
    panels: list[Panel] = []
    numbers = {}
    for name, model, size in p.models:
        shape, classes = data_shape(p.data, size)
        pair, info = panels_for(name, model, size, p, seed, shape, classes)
        panels += pair
        numbers[name] = info
    trained = train_panels(panels, Path(out) / "cache" / "fig4", device=device,
                           distributed=distributed, jobs=jobs, progress=progress,
                           executor=executor, desc="fig4 runs")
    png = plot_panels(panels, Path(out) / "fig4.png",
                      "Figure 4 — DSignSGD with its scaling rule (green) recovers "
                      "DSignSGD(η, B, N) (black); breaking it (red) does not", NOTE, columns=2)
    data_out = {"note": NOTE, "preset": asdict(p), "numbers": numbers, **trained,
                "preset_chosen_on_seeds": list(PRESET_SEEDS),
                "training_seeds_from": 1000 * (seed + SEED_OFFSET)}
    return FigureOutcome("fig4", CLAIM, {pn.name: pn.judgement for pn in panels}, png,
                         data_out)


NOTE = ("Training loss on a fixed training subset. Gaussian gradient noise is injected per agent "
        "(σ/√B per coordinate) so gradients are noise-dominated (Phase 3, THEORY.md §3), the "
        "regime of the rules (§5). Tolerance: 99% prediction interval of one more reference "
        "seed, over the last half of the run (grey band).")


@figure("fig4", CLAIM, data=tuple(dict.fromkeys(p.data for p in PRESETS.values())),
        quick_seconds=230)
def run(out: Path, preset: str = "quick", seed: int = 0, progress: bool = False,
        distributed: bool = False, jobs: int = 1,
        executor: Executor | str | None = None) -> FigureOutcome:
    """Reproduce figure 4 with the ``quick`` or ``full`` preset."""
    return reproduce(PRESETS[preset], out, seed=seed, progress=progress,
                     distributed=distributed, jobs=jobs, executor=executor)
