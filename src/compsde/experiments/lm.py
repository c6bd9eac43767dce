"""Figure ``lm``: where heavy tails come from — a transformer language model on real text.

Beyond the paper (THEORY.md §6, §8): the paper's heavy tails are injected; here the noise is the
model's own. A small decoder-only transformer (``gpt``, :mod:`compsde.nn.gpt`) is trained on
English text (Debian's ``fortunes``, word tokens, :mod:`compsde.nn.text`) with N agents
simulated in one process (:mod:`.deep`, vmap over agents) or with torchrun (``--distributed``),
**without injected noise**.

1. **Measure** (:mod:`.lm_noise`): after the warm-up the Student-t tail index ν̂ of the
   mini-batch gradients (whole model and per parameter group: embeddings, attention, MLP,
   norms), beside the MLP and ResNet on Fashion-MNIST.
2. **Predict** from the measured whole-model ν̂ (upper end of its 95 % interval, so a verdict
   of "heavy" is not an accident of the estimate), before any training run:
   - ν̂ ≤ 2 (infinite variance, §6): DCSGD has no stationary loss — even at the batch that the
     finite-variance scaling rule (1+ω)B prescribes (§5), its training loss makes excursions
     (spikes) above its best value so far; DSignSGD's messages are bounded and its loss does
     not. Quantity: the mean *largest excursion* (below) of DCSGD minus DSignSGD's.
   - ν̂ > 2 (finite variance): the (1 + ω) factor — DCSGD at (η, (1+ω)B, N) recovers DSGD(η, B,
     N), DCSGD at (η, B, N) does not (:mod:`.deep_figure`'s verdict). The figure then says the
     noise is not heavy-tailed at this scale and adds the injected-noise contrast: the same
     three methods with Student-t noise (ν = ``contrast_nu`` ≤ 2) added to every gradient,
     judged by the heavy-tail prediction.
3. **Judge** exactly that prediction.

**Largest excursion** of a run: ``max_{r ∈ last half} (ℓ_r − min_{r' ≤ r} ℓ_{r'})`` over the
recorded training losses ℓ_r (cross-entropy on a fixed training subset, a deterministic function
of the parameters, so an excursion is a move of the parameters, not evaluation noise); a
diverged run has an infinite excursion.

**Spike verdict** (fixed before the runs): with S seeds per method, ``Δ = mean E_DCSGD − mean
E_DSignSGD`` and ``se = √(s²_DCSGD/S + s²_DSignSGD/S)``; pass when ``Δ > 2·se + SPIKE_BUDGET``.
``SPIKE_BUDGET`` = 0.05 nats is the model-error allowance: an excursion below it is a wiggle of a
decreasing loss (about a tenth of the per-record loss decrease early in training), not a spike.
A diverged DCSGD run counts as a spike (Δ = ∞).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .. import compressors
from ..io import save_figure
from ..nn.data import check_data
from ..scaling import dcsgd_from_dsgd
from ..verdicts import check
from ..verdicts import panel as panel_verdict
from .cache import RunCache, run_sweep
from .deep import TrainSpec, data_shape, default_device, model_dimension
from .deep_figure import Arm, Panel, judge, train_panels
from .lm_noise import NoiseSpec, noise_config, nu_text, plot_comparison
from .registry import FigureOutcome, figure

CLAIM = ("On a transformer language model trained on English text without injected noise, the "
         "measured tail index ν̂ says what to expect: ν̂ ≤ 2 — DCSGD's loss spikes even at the "
         "(1+ω) batch rule while DSignSGD's does not; ν̂ > 2 — DCSGD at the (1+ω) rule "
         "recovers DSGD")
SPIKE_BUDGET = 0.05   # nats: excursions below this are wiggles of a decreasing loss
SPIKE_K = 2.0         # standard errors of the difference of mean excursions
HEAVY_NU = 2.0        # ν ≤ 2: infinite variance (THEORY.md §6)


@dataclass(frozen=True)
class Preset:
    """What ``lm`` measures and trains; ``chosen_with`` records the seeds that chose it."""

    model: str
    data: str
    lr: float
    sign_lr: float
    batch: int
    agents: int
    steps: int
    compressor: str
    seeds: int
    eval_size: int
    eval_every: int
    warmup: int
    samples: int
    compare: tuple[tuple[str, str, str, int], ...]   # (label, model, data, batch)
    compare_lr: float
    contrast_nu: float
    contrast_noise: float   # σ√d of the injected Student-t noise of the contrast
    chosen_with: tuple[int, ...]

    def scaled(self, **changes: Any) -> Preset:
        return replace(self, **changes)


QUICK = Preset(
    model="gpt:size=small", data="text", lr=0.5, sign_lr=0.002, batch=16, agents=4,
    steps=300, compressor="randk:ratio=0.25", seeds=3, eval_size=1024, eval_every=10,
    warmup=200, samples=64,
    compare=(("MLP, Fashion-MNIST", "mlp", "fashion-mnist", 128),
             ("ResNet-8, Fashion-MNIST", "resnet:depth=8,norm=group", "fashion-mnist", 128)),
    compare_lr=0.05, contrast_nu=1.5, contrast_noise=3.0, chosen_with=(100,))
FULL = QUICK.scaled(model="gpt:size=gpu", steps=3000, seeds=5, eval_size=2048,
                    eval_every=50, samples=128)
PRESETS = {"quick": QUICK, "full": FULL}
# For tests: a tiny GPT on a 500-word vocabulary, 30 steps (seconds, same code path).
SMOKE = QUICK.scaled(model="gpt:size=tiny", data="text:vocab=500,context=16", batch=8,
                     steps=30, seeds=3, warmup=10, samples=16, eval_size=64, eval_every=5,
                     compare=())


def largest_excursion(result: dict[str, Any]) -> float:
    """``max_{r in last half} (ℓ_r − min_{r' ≤ r} ℓ_{r'})``; ``inf`` if the run diverged."""
    if result.get("diverged"):
        return math.inf
    losses = np.asarray([v for v in result["loss"] if v is not None], dtype=float)
    best = np.minimum.accumulate(losses)
    start = len(losses) // 2
    return float(np.max(losses[start:] - best[start:]))


def judge_spikes(dcsgd: Sequence[dict[str, Any]], sign: Sequence[dict[str, Any]],
                 budget: float = SPIKE_BUDGET, k: float = SPIKE_K) -> dict[str, Any]:
    """The spike verdict of the module docstring on the runs of each method."""
    e_dc = np.array([largest_excursion(r) for r in dcsgd])
    e_sign = np.array([largest_excursion(r) for r in sign])
    if not np.all(np.isfinite(e_sign)):
        measured, se = -math.inf, math.nan
    elif not np.all(np.isfinite(e_dc)):
        measured, se = math.inf, math.nan
    else:
        measured = float(e_dc.mean() - e_sign.mean())
        se = float(math.sqrt(e_dc.var(ddof=1) / e_dc.size + e_sign.var(ddof=1) / e_sign.size))
    threshold = k * (se if math.isfinite(se) else 0.0) + budget
    entry = check("mean largest loss excursion, DCSGD minus DSignSGD (nats)", measured,
                  threshold, relation="at_least", k=0.0,
                  rule=f"DCSGD's mean largest excursion exceeds DSignSGD's by at least {k:g} se "
                       f"+ {budget:g} nats (the budget for wiggles of a decreasing loss)")
    return panel_verdict([entry], se=se, excursions_dcsgd=e_dc.tolist(),
                         excursions_dsignsgd=e_sign.tolist(),
                         detail=f"Δ excursion {measured:+.3f} vs threshold {threshold:.3f} "
                                f"(DCSGD {np.round(e_dc, 3).tolist()}, DSignSGD "
                                f"{np.round(e_sign, 3).tolist()})")


def judge_factor(panel: Panel) -> dict[str, Any]:
    """The (1+ω) verdict: :func:`.deep_figure.judge` (arms inside / outside the reference's
    prediction interval)."""
    return judge(panel)


def predict(noise: dict[str, Any]) -> dict[str, Any]:
    """The prediction from the measured whole-model ν̂ (module docstring, step 2)."""
    xi, se = noise["xi"], noise["xi_se"] or 0.0
    upper_nu = math.inf if xi - 1.96 * se <= 0 else 1.0 / (xi - 1.96 * se)
    heavy = upper_nu <= HEAVY_NU
    nu = nu_text(xi, noise["xi_se"])
    if heavy:
        text = (f"measured ν̂ = {nu} (95 % interval up to {upper_nu:.3g}) ≤ 2: infinite "
                f"variance — DCSGD has no stationary loss and its loss spikes even at the "
                f"(1+ω) batch rule; DSignSGD's loss does not spike")
    else:
        text = (f"measured ν̂ = {nu} > 2 (or not confidently ≤ 2): finite variance — the "
                f"(1+ω) factor: DCSGD at (η, (1+ω)B, N) recovers DSGD(η, B, N), DCSGD at "
                f"(η, B, N) does not. The noise at this scale is not heavy-tailed; the "
                f"injected Student-t contrast shows what heavy tails would do")
    return {"heavy": heavy, "nu_upper": upper_nu, "text": text}


def _arms(p: Preset, seed: int, d: int, *, noise: float = 0.0, nu: float = 0.0,
          tag: str = "") -> tuple[dict[str, list[Arm]], dict[str, Any]]:
    """The runs of one panel: DSGD, DCSGD at the (1+ω)B rule, DCSGD at (η, B, N), DSignSGD."""
    omega = compressors.make(p.compressor).omega(d)
    rule = dcsgd_from_dsgd(p.lr, p.batch, p.agents, omega, via="batch", first_order=True)
    b_rule = round(rule.config.batch)
    base = TrainSpec(model=p.model, data=p.data, method="dsgd", lr=p.lr, batch=p.batch,
                     agents=p.agents, steps=p.steps, noise=noise / math.sqrt(d),
                     noise_nu=nu, seed=0, eval_size=p.eval_size, eval_every=p.eval_every)
    method = f"dcsgd:{p.compressor}"
    first = 1000 * seed + (500 if tag else 0)
    arms: dict[str, list[Arm]] = {"dsgd": [], "rule": [], "norule": [], "sign": []}
    for i in range(p.seeds):
        s = first + i
        arms["dsgd"].append(Arm("DSGD", "reference", base.with_(seed=s),
                                f"DSGD η={p.lr:g}, B={p.batch}, N={p.agents}"))
        arms["rule"].append(Arm("DCSGD (1+ω)B", "follows",
                                base.with_(method=method, batch=b_rule, seed=s),
                                f"Rand-k ω={omega:.0f}, B̃={b_rule}"))
        arms["norule"].append(Arm("DCSGD B", "breaks", base.with_(method=method, seed=s),
                                  f"Rand-k ω={omega:.0f}, B={p.batch} kept"))
        arms["sign"].append(Arm("DSignSGD", "reference",
                                base.with_(method="dsignsgd", lr=p.sign_lr, seed=s),
                                f"DSignSGD η={p.sign_lr:g}, B={p.batch}"))
    return arms, {"omega": omega, "batch_rule": b_rule}


def data_sets(p: Preset) -> tuple[str, ...]:
    """The data sets ``p`` reads: the language model's text and the comparisons' images."""
    return tuple(dict.fromkeys([p.data, *(data for _, _, data, _ in p.compare)]))


def _noise_specs(p: Preset, seed: int) -> list[NoiseSpec]:
    """The GPT's measurement and the comparisons'."""
    measure_seed = 1000 * seed + 900
    specs = [NoiseSpec(f"GPT ({p.model}), {p.data}", p.model, p.data, p.batch, p.lr, p.warmup,
                       p.samples, measure_seed)]
    for label, model, data, batch in p.compare:
        specs.append(NoiseSpec(label, model, data, batch, p.compare_lr, p.warmup, p.samples,
                               measure_seed))
    return specs


def _runs(arms: dict[str, list[Arm]], keys: Sequence[str]) -> list[Arm]:
    return [a for k in keys for a in arms[k]]


def _panel(name: str, title: str, arms: dict[str, list[Arm]], heavy: bool) -> Panel:
    keys = ("dsgd", "rule", "sign") if heavy else ("dsgd", "rule", "norule", "sign")
    return Panel(name, title, _runs(arms, keys))


def _results(panel: Panel, label: str) -> list[dict[str, Any]]:
    return [r for a, r in zip(panel.arms, panel.results, strict=True) if a.label == label]


def _judge(panel: Panel, heavy: bool) -> dict[str, Any]:
    if heavy:
        return judge_spikes(_results(panel, "DCSGD (1+ω)B"), _results(panel, "DSignSGD"))
    sub = Panel(panel.name, panel.title, [a for a in panel.arms if a.label != "DSignSGD"])
    sub.results = [r for a, r in zip(panel.arms, panel.results, strict=True)
                   if a.label != "DSignSGD"]
    return judge_factor(sub)


def reproduce(p: Preset, out: Path, *, seed: int = 0, progress: bool = False,
              distributed: bool = False, device: str | None = None,
              jobs: int = 1) -> FigureOutcome:
    """Measure, predict, train, judge, plot (module docstring); runs cached under
    ``out/cache/lm``."""
    check_data(data_sets(p))                 # before any run: one line with the install command
    device = device or default_device()
    folder = Path(out) / "cache" / "lm"
    specs = _noise_specs(p, seed)
    measured = run_sweep([s.config() for s in specs], noise_config, RunCache(folder / "noise"),
                         progress=progress, desc="lm noise", jobs=jobs).results
    prediction = predict(measured[0])
    shape, classes = data_shape(p.data)
    d = model_dimension(p.model, shape, classes)
    arms, info = _arms(p, seed, d)
    title = f"real text, no injected noise (d={d:,})"
    panels = [_panel("real", title, arms, prediction["heavy"])]
    if not prediction["heavy"]:
        contrast, _ = _arms(p, seed, d, noise=p.contrast_noise, nu=p.contrast_nu, tag="t")
        panels.append(_panel("contrast", f"injected Student-t noise ν={p.contrast_nu:g}, "
                                         f"σ√d={p.contrast_noise:g}", contrast, True))
    trained = train_panels(panels, folder / "train", device=device, distributed=distributed,
                           jobs=jobs, progress=progress, desc="lm runs")
    verdicts = {}
    for panel in panels:
        heavy = prediction["heavy"] if panel.name == "real" else True
        panel.judgement = _judge(panel, heavy)
        verdicts[panel.name] = panel.judgement | {"prediction": prediction["text"]
                                                  if panel.name == "real" else
                                                  "injected ν ≤ 2: DCSGD spikes, DSignSGD "
                                                  "does not"}
    png = plot(panels, measured, prediction, Path(out) / "lm.png")
    data = {"note": NOTE, "preset": asdict(p), "prediction": prediction, "noise": measured,
            "numbers": info | {"dimension": d}, **trained}
    return FigureOutcome("lm", CLAIM, verdicts, png, data)


COLORS = {"DSGD": "black", "DCSGD (1+ω)B": "tab:red", "DCSGD B": "salmon",
          "DSignSGD": "tab:blue"}


def _plot_runs(ax: Any, panel: Panel, prediction: str) -> None:
    shown: set[str] = set()
    start = max(float(r["loss"][0]) for r in panel.results if r["loss"][0] is not None)
    top = 1.15 * start                      # a diverged run leaves the axis: marked with ×
    for arm, result in zip(panel.arms, panel.results, strict=True):
        y = np.array([np.nan if v is None else v for v in result["loss"]], dtype=float)
        label = None if arm.label in shown else f"{arm.label}: {arm.rule}"
        shown.add(arm.label)
        ax.plot(result["steps"], np.minimum(y, top), color=COLORS[arm.label], lw=1.1,
                alpha=0.8, label=label)
        above = np.nonzero(~(y <= top))[0]
        if result.get("diverged") or above.size:
            k = result["steps"][int(above[0])] if above.size else result["steps"][-1]
            ax.plot([k], [top], "x", color=COLORS[arm.label], ms=9, mew=2)
            ax.annotate("diverged" if result.get("diverged") else "off scale", (k, top),
                        textcoords="offset points", xytext=(4, -10), fontsize=7,
                        color=COLORS[arm.label])
    ax.set_ylim(None, top * 1.02)
    j = panel.judgement
    ax.set_title(f"{panel.title}\n{textwrap.fill('prediction: ' + prediction, 95)}\n"
                 f"verdict: {j.get('verdict', '?').upper()} — measured {j.get('measured', 0):.3g}"
                 f", predicted {j.get('predicted', 0):.3g} ± {j.get('tolerance', 0):.3g}",
                 fontsize=8)
    ax.set_xlabel("step k")
    ax.set_ylabel("training loss (next-token cross-entropy, fixed subset)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


def plot(panels: Sequence[Panel], measured: Sequence[dict[str, Any]],
         prediction: dict[str, Any], path: Path) -> Path:
    """ν̂ per group and model, then the training curves of each panel with its verdict."""
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(6.4 * (1 + len(panels)), 5.4),
                             squeeze=False)
    plot_comparison(axes[0, 0], measured)
    for ax, panel in zip(axes[0, 1:], panels, strict=True):
        text = prediction["text"] if panel.name == "real" else \
            "injected ν ≤ 2: DCSGD spikes, DSignSGD does not"
        _plot_runs(ax, panel, text)
    fig.suptitle("Figure lm — a GPT on English text: measured gradient-noise tails and the "
                 "three methods", fontsize=11)
    fig.text(0.5, -0.02, NOTE, ha="center", va="top", fontsize=8, wrap=True)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


NOTE = ("Noise measured after the warm-up (Student-t fit per parameter group, 95 % intervals). "
        "Training: N agents simulated in one process, no injected noise on the real-text "
        "panel; DCSGD uses Rand-k at the first-order batch rule B̃ = (1+ω)B. Spike verdict: "
        "DCSGD's mean largest loss excursion above its running best exceeds DSignSGD's by "
        "more than 2 se + 0.05 nats.")


@figure("lm", CLAIM, data=tuple(dict.fromkeys(d for p in PRESETS.values()
                                             for d in data_sets(p))), quick_seconds=680)
def run(out: Path, preset: str = "quick", seed: int = 0, progress: bool = False,
        distributed: bool = False, jobs: int = 1) -> FigureOutcome:
    """Reproduce figure ``lm`` with the ``quick`` or ``full`` preset."""
    return reproduce(PRESETS[preset], out, seed=seed, progress=progress,
                     distributed=distributed, jobs=jobs)
