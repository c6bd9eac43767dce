"""The EF-signSGD table on Fashion-MNIST: sign compression as the batch shrinks (THEORY.md §8c).

Karimireddy et al. (2019, arXiv 1901.09847) train one worker at batch 128 → 32 → 8 (ResNet18 /
CIFAR-100, VGG19 / CIFAR-10, three seeds) and report each method's test-accuracy gap to SGD
with momentum: scaled sign falls from −2.2 to −36.4 points (VGG19: −1.3 to −20.2), Signum from
−3.2 to −6.6, while EF-signSGD stays within about 0.9 points at every batch. This module runs
the same table on what two CPU cores afford: Fashion-MNIST, the MLP, one agent, three seeds,
the methods ``dsgd`` (SGD, no momentum), ``scaledsign``, ``signum:beta=0.9``, ``ef-signsgd`` and
``dsignsgd`` (with one agent: signSGD), every arm trained for the same number of epochs.

**Prediction (written before any training run).** One agent sees the gradient noise at scale
σ_B = σ/√B (THEORY.md §1a); as B shrinks from 128 to 8 it grows fourfold.

- Scaled sign, Δ = (‖g‖₁/d) sign(g). With large batches sign(g) = sign(∇f) and the step is
  signSGD's with the adaptive size ‖∇f‖₁/d (a fixed bias). When the noise dominates, per
  coordinate E sign(g_j) ≈ √(2/π) ∂_j f/σ_{B,j} and the scale is ≈ √(2/π) σ̄_B (mean over all d
  coordinates): the drift is ∂_j f · (2/π) σ̄/σ_j and every coordinate jitters at the *average*
  noise σ̄_B. On a quadratic coordinate of curvature λ_j the level is ≈ η σ̄_B σ_{B,j}/(2λ_j)
  against SGD's η σ_{B,j}²/(2λ_j): σ̄/σ_j times SGD's. A network's per-coordinate noise spans
  orders of magnitude across layers, so for most coordinates σ̄/σ_j ≫ 1 and the excess grows
  with σ_B² — both the scale (now measuring noise, not signal) and the sign degrade. Predicted:
  scaled sign's gap to SGD widens as B shrinks (published: −2.2 → −36.4 points).
- EF-signSGD, p = g + e, Δ = (‖p‖₁/d) sign(p), e ← p − Δ. Summing the steps, Σ_k Δ_k =
  Σ_k g_k − e_K: the iterate is SGD's path shifted by the bounded error η e_K (Karimireddy et
  al. Thm. II: ‖e‖ bounded through the compressor's contraction), so EF corrects the bias and its
  level is SGD's up to a term that vanishes with η. Predicted: its gap to SGD stays within a
  fixed band at every batch, and at B = 8 it beats scaled sign.
- DSignSGD (signSGD with one agent) and Signum: THEORY.md §3's Phase 3 gives a drift ∝ √B/σ
  (slower as B shrinks) and a level ∝ η σ_B (against SGD's ∝ η σ_B²); Signum's momentum averages
  about (1+β)/(1−β) = 19 gradients before the sign. Expected: moderate widening, between EF and
  scaled sign (published Signum: −3.2 → −6.6). *Reported, not judged*: no SDE of Signum is
  derived here (§8a), and DSignSGD's level at a learning rate fixed across B has no closed form
  on a network.

**Quantity.** The test accuracy (points, on the whole test split), the paper's quantity: at
the end of training, as the mean over the records in the last :data:`FINAL_FRACTION` of the
steps (the iterate fluctuates at a constant learning rate). A run that diverged counts at
chance (100/classes points). The gap of a method at batch B is paired by seed (same
initialisation and data stream as SGD's run): ``gap_i = acc_i(method) − acc_i(SGD)``, and its
se is ``sd(gap_i)/√S`` over the S seeds. The training loss on a fixed training subset is
recorded and reported too (the SDE's quantity), not judged.

**Checks (fixed before any run; k = :data:`K_SE` = 2 standard errors, as the brief of the
figure asks: with S = 3 seeds an se has 2 degrees of freedom, so this is a weak test and is
reported as such).**

1. Scaled sign widens: ``gap(128) − gap(8) ≥ 2 se`` (se of the paired difference).
2. EF-signSGD stays within the band at every batch: ``|gap(B)| ≤ 2 se + EF_BAND``,
   :data:`EF_BAND` = 1 point: the paper's EF-signSGD stays within 0.9 points of SGD at every
   batch on both networks; rounded up, it is the published size of "no loss".
3. EF-signSGD beats scaled sign at B = 8: ``acc(EF) − acc(scaled) ≥ 2 se`` (paired).

**Equal epochs** (as the paper): a run at batch B takes ``round(epochs · n / B)`` steps, so the
B = 8 arm takes 16× the steps of the B = 128 arm (about 70 % of the compute). Equal steps
would give the small batches 16× less data and confound the noise with under-training; the
theory's question — the level reached as σ/√B grows — needs every arm near its level.

**Learning rates** (:data:`LEARNING_RATES`): one per method, kept at every batch (the theory's
question is the level at fixed η as σ/√B grows), chosen on the seeds :data:`PRESET_SEEDS`
(training seeds 0–2), not on the judged ones (``reproduce --seed S`` trains seeds
``1000·(S + SEED_OFFSET) + i``). Signum and signSGD: the best final test accuracy at B = 128 of
a grid. SGD, scaled sign and EF-signSGD share one (all three step in gradient units): the
largest of SGD's grid at which SGD stays finite at every batch. Neither criterion looks at any
check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_device, check_float, check_int
from ..executors import Executor, LocalExecutor
from ..executors import resolve as resolve_executor
from ..nn.data import check_data
from ..verdicts import check
from ..verdicts import panel as panel_verdict
from .cache import RunCache, run_sweep
from .deep import TrainSpec, default_device, load
from .deep_figure import local_compute
from .registry import FigureOutcome, figure

CLAIM = ("Scaled sign loses test accuracy to SGD as the batch shrinks from 128 to 8, while "
         "EF-signSGD stays within 1 point of SGD at every batch and beats scaled sign at B = 8 "
         "(the pattern of Karimireddy et al. 2019's table; one agent, Fashion-MNIST MLP)")

SGD, SCALED, EF = "dsgd", "scaledsign", "ef-signsgd"
REPORTED = ("signum:beta=0.9", "dsignsgd")   # measured and shown, not judged
LABELS = {SGD: "SGD", SCALED: "scaled sign", EF: "EF-signSGD",
          "signum:beta=0.9": "Signum (β=0.9)", "dsignsgd": "signSGD (dsignsgd)"}
K_SE = 2.0          # standard errors of every check (module docstring)
EF_BAND = 1.0       # accuracy points: the paper's EF-signSGD stays within 0.9 of SGD
FINAL_FRACTION = 0.1  # the final accuracy: mean over the records in the last 10 % of the steps

PREDICTION = {
    "scaled sign": "gap to SGD widens as B shrinks 128 → 8: gap(128) − gap(8) ≥ 2 se "
                   "(noise-dominated scale ‖g‖₁/d and sign: level ≈ σ̄/σ_j × SGD's per "
                   "coordinate; published −2.2 → −36.4 points)",
    "EF-signSGD": f"|gap to SGD| ≤ 2 se + {EF_BAND:g} point at every batch (Σ Δ_k = Σ g_k − e_K: "
                  f"SGD's path up to η e; published within 0.9 points)",
    "EF vs scaled sign": "at B = 8, acc(EF-signSGD) − acc(scaled sign) ≥ 2 se",
    "Signum, signSGD": "moderate widening between EF and scaled sign (Phase-3 level ∝ η σ/√B, "
                       "momentum averages ≈ 19 gradients; published Signum −3.2 → −6.6): "
                       "reported, not judged",
}

# Out-of-sample judging: the learning rates were chosen on ``seed`` 0 (training seeds 0–2);
# ``reproduce --seed S`` trains seeds 1000·(S + SEED_OFFSET) + i.
PRESET_SEEDS = (0,)
SEED_OFFSET = 20      # 10 (seeds 10000–10002) judged the first preset and is retired
# One learning rate per method (module docstring), the best B = 128 test accuracy of its grid
# on PRESET_SEEDS at the quick budget (one epoch): see THEORY.md §8c for the grids.
# Grids (mean of the 3 preset seeds, points): SGD 0.01/0.03/0.1/0.3/1 → 75.1/80.9/83.4/84.0/
# 10.0 (diverged); scaled sign → 70.1/76.7/81.8/83.5/81.3; EF-signSGD → 74.5/80.9/83.8/84.8/84.7;
# Signum 1e-4/3e-4/1e-3/3e-3 → 83.5/84.9/84.5/80.3; signSGD → 81.1/83.0/83.5/79.1.
# SGD, scaled sign and EF-signSGD step in gradient units and share one learning rate: the
# largest of SGD's grid at which SGD stays finite at every batch on PRESET_SEEDS. 0.3 (the
# B = 128 optimum) diverged at B = 8 on every seed of the first judged set (10000–10002, now
# retired: SEED_OFFSET 10 → 20); 0.1 at B = 8 on the preset seeds: 83.0 / 80.5 / 83.4.
LEARNING_RATES: dict[str, float] = {SGD: 0.1, SCALED: 0.1, "signum:beta=0.9": 3e-4, EF: 0.1,
                                    "dsignsgd": 1e-3}


@dataclass(frozen=True)
class Preset:
    """What the figure trains: every method of ``methods`` (spec, learning rate) at every batch
    of ``batches`` for ``epochs`` epochs of the training set (``train_size`` examples, 0 = all),
    with ``seeds`` seeds and ``records`` records per run."""

    model: str
    data: str
    methods: tuple[tuple[str, float], ...]
    batches: tuple[int, ...]
    epochs: float
    seeds: int
    agents: int = 1
    image_size: int = 0
    train_size: int = 0
    eval_size: int = 1024
    test_size: int = 10000
    records: int = 20

    def __post_init__(self) -> None:
        names = [m for m, _ in self.methods]
        for needed in (SGD, SCALED, EF):
            if needed not in names:
                raise ValueError(f"methods must include {SGD}, {SCALED} and {EF} (the judged "
                                 f"ones), got {', '.join(names)}")
        for _, lr in self.methods:
            check_float("lr", lr, low=0.0, low_open=True)
        if len(self.batches) < 2:
            raise ValueError(f"batches must be at least 2 batch sizes, got {self.batches}")
        for b in self.batches:
            check_int("batch", b, minimum=1)
        if list(self.batches) != sorted(self.batches, reverse=True):
            raise ValueError(f"batches must be in decreasing order (largest first), got "
                             f"{self.batches}")
        check_float("epochs", self.epochs, low=0.0, low_open=True)
        check_int("seeds", self.seeds, minimum=2)
        check_int("agents", self.agents, minimum=1)
        check_int("records", self.records, minimum=1)
        check_int("test_size", self.test_size, minimum=1)

    def scaled(self, **changes: Any) -> Preset:
        return replace(self, **changes)


ALL_METHODS = tuple((m, LEARNING_RATES[m]) for m in (SGD, SCALED, "signum:beta=0.9", EF,
                                                      "dsignsgd"))
QUICK = Preset(model="mlp", data="fashion-mnist", methods=ALL_METHODS, batches=(128, 32, 8),
               epochs=1.0, seeds=3)
# Larger: ten epochs (about 10× the quick compute; the learning rates are the quick ones).
FULL = QUICK.scaled(epochs=10.0, records=40)
PRESETS = {"quick": QUICK, "full": FULL}


def steps_for(p: Preset, batch: int, examples: int) -> int:
    """Steps of an arm at ``batch``: equal epochs, ``round(epochs · n / B)`` (at least 1)."""
    return max(1, round(p.epochs * examples / batch))


def training_examples(p: Preset) -> int:
    """n: the size of the training subset the runs sample from."""
    n = len(load(p.data).y_train)
    return min(p.train_size, n) if p.train_size else n


def specs_for(p: Preset, seed: int = 0, offset: int = SEED_OFFSET) -> list[TrainSpec]:
    """Every run of the table, in (method, batch, seed) order; seed i of ``reproduce --seed S``
    is ``1000·(S + offset) + i`` (the same for every method and batch: gaps pair by seed)."""
    n = training_examples(p)
    first = 1000 * (seed + offset)
    specs = []
    for method, lr in p.methods:
        for batch in p.batches:
            steps = steps_for(p, batch, n)
            for i in range(p.seeds):
                specs.append(TrainSpec(
                    model=p.model, data=p.data, method=method, lr=lr, batch=batch,
                    agents=p.agents, steps=steps, seed=first + i, image_size=p.image_size,
                    train_size=p.train_size, eval_size=p.eval_size,
                    eval_every=max(1, steps // p.records), test_size=p.test_size))
    return specs


def final_accuracy(result: Mapping[str, Any], classes: int = 10) -> float:
    """Test accuracy in points at the end of a run: the mean over the records in the last
    :data:`FINAL_FRACTION` of the steps (at least the last record); chance if it diverged."""
    if result.get("diverged"):
        return 100.0 / classes
    steps = np.asarray(result["steps"], dtype=float)
    acc = np.asarray([np.nan if a is None else a for a in result["test_accuracy"]], float)
    window = steps >= steps[-1] * (1 - FINAL_FRACTION)
    window[-1] = True
    return float(100.0 * np.nanmean(acc[window]))


def final_loss(result: Mapping[str, Any]) -> float:
    """Mean training loss over the same window (``inf`` if the run diverged)."""
    if result.get("diverged"):
        return math.inf
    steps = np.asarray(result["steps"], dtype=float)
    loss = np.asarray([np.nan if v is None else v for v in result["loss"]], float)
    window = steps >= steps[-1] * (1 - FINAL_FRACTION)
    window[-1] = True
    return float(np.nanmean(loss[window]))


Table = dict[str, dict[int, list[float]]]   # method -> batch -> one value per seed


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan
    return float(a.mean()), se


def gaps(table: Table, batches: Sequence[int], reference: str = SGD
         ) -> dict[str, dict[int, dict[str, float]]]:
    """Per method and batch: the paired gap to ``reference`` (mean and se over seeds)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for method, by_batch in table.items():
        if method == reference:
            continue
        out[method] = {}
        for b in batches:
            diff = np.asarray(by_batch[b], float) - np.asarray(table[reference][b], float)
            mean, se = _mean_se(diff)
            out[method][b] = {"gap": mean, "se": se}
    return out


def judge(table: Table, batches: Sequence[int], k: float = K_SE,
          band: float = EF_BAND) -> dict[str, dict[str, Any]]:
    """The three verdicts (module docstring) from the final accuracies ``table`` (points per
    seed, paired across methods by seed) at ``batches`` (largest first)."""
    for needed in (SGD, SCALED, EF):
        if needed not in table:
            raise ValueError(f"table must hold {SGD}, {SCALED} and {EF}, got {sorted(table)}")
    large, small = batches[0], batches[-1]
    seeds = len(table[SGD][large])
    if seeds < 2:
        raise ValueError(f"table must hold at least 2 seeds per arm, got {seeds}")

    def paired(a: str, b_a: int, c: str, b_c: int) -> np.ndarray:
        return np.asarray(table[a][b_a], float) - np.asarray(table[c][b_c], float)

    gap = {m: {b: paired(m, b, SGD, b) for b in batches} for m in (SCALED, EF)}
    growth, growth_se = _mean_se(gap[SCALED][large] - gap[SCALED][small])
    widens = check(f"scaled sign: gap(B={large}) − gap(B={small}) (points)", growth,
                   k * growth_se, relation="at_least", k=0.0,
                   rule=f"scaled sign's gap to SGD widens from B={large} to B={small} by at "
                        f"least {k:g} se (se {growth_se:.3g})")
    scaled_panel = panel_verdict(
        [widens], rule=widens["rule"], se=growth_se,
        detail="scaled sign − SGD: " + ", ".join(
            f"B={b} {_mean_se(gap[SCALED][b])[0]:+.2f}" for b in batches)
        + f" points; widening {growth:+.2f} ± {growth_se:.2f} (se)")
    band_checks = []
    for b in batches:
        mean, se = _mean_se(gap[EF][b])
        band_checks.append(check(f"EF-signSGD − SGD at B={b} (points)", mean, 0.0, se=se, k=k,
                                 absolute=band,
                                 rule=f"|EF-signSGD − SGD| ≤ {k:g} se + EF_BAND {band:g} point "
                                      f"at B={b}"))
    ef_panel = panel_verdict(
        band_checks, rule=f"EF-signSGD stays within {k:g} se + {band:g} point of SGD at every "
                          f"batch",
        detail="EF-signSGD − SGD: " + ", ".join(
            f"B={b} {c['measured']:+.2f} ± {c['se']:.2f}" for b, c in zip(batches, band_checks,
                                                                         strict=True))
        + " points")
    lead, lead_se = _mean_se(paired(EF, small, SCALED, small))
    beats = check(f"EF-signSGD − scaled sign at B={small} (points)", lead, k * lead_se,
                  relation="at_least", k=0.0,
                  rule=f"EF-signSGD beats scaled sign at B={small} by at least {k:g} se "
                       f"(se {lead_se:.3g})")
    beats_panel = panel_verdict([beats], rule=beats["rule"], se=lead_se,
                                detail=f"EF-signSGD − scaled sign at B={small}: {lead:+.2f} ± "
                                       f"{lead_se:.2f} points")
    return {"scaled sign widens": scaled_panel, "EF-signSGD within band": ef_panel,
            "EF beats scaled sign": beats_panel}


def tables(specs: Sequence[TrainSpec], results: Sequence[Mapping[str, Any]], classes: int = 10
           ) -> tuple[Table, Table]:
    """Final test accuracy (points) and final training loss per method, batch and seed."""
    acc: Table = {}
    loss: Table = {}
    for spec, result in zip(specs, results, strict=True):
        acc.setdefault(spec.method, {}).setdefault(spec.batch, []).append(
            final_accuracy(result, classes))
        loss.setdefault(spec.method, {}).setdefault(spec.batch, []).append(final_loss(result))
    return acc, loss


def reproduce(p: Preset, out: Path, *, seed: int = 0, progress: bool = False,
              device: str | None = None, jobs: int = 1,
              executor: Executor | str | None = None) -> FigureOutcome:
    """Train every (method, batch, seed) run (cached under ``out/cache/ef``; ``jobs`` runs at a
    time in worker processes), judge the three checks, plot the gaps."""
    from .ef_plot import plot_gaps

    check_data([p.data])                     # before any run: one line with the install command
    check_int("seed", seed, minimum=0)
    device = str(check_device(device or default_device()))
    chosen = resolve_executor(executor, jobs)
    specs = specs_for(p, seed)
    compute = local_compute(device, progress and isinstance(chosen, LocalExecutor))
    sweep = run_sweep([s.config() for s in specs], compute, RunCache(Path(out) / "cache" / "ef"),
                      progress=progress, desc="ef runs", executor=chosen)
    classes = load(p.data).classes
    acc, loss = tables(specs, sweep.results, classes)
    panels = judge(acc, p.batches)
    acc_gaps, loss_gaps = gaps(acc, p.batches), gaps(loss, p.batches)
    png = plot_gaps(acc_gaps, loss_gaps, p, panels, Path(out) / "ef.png", LABELS)
    n = training_examples(p)
    data_out = {
        "prediction": PREDICTION, "quantity": "final test accuracy (points), paired gap to SGD",
        "k_se": K_SE, "ef_band_points": EF_BAND, "final_fraction": FINAL_FRACTION,
        "reported_not_judged": list(REPORTED), "preset": asdict(p),
        "steps": {str(b): steps_for(p, b, n) for b in p.batches}, "training_examples": n,
        "learning_rates": dict(p.methods), "device": device,
        "accuracy": {m: {str(b): v for b, v in t.items()} for m, t in acc.items()},
        "gaps": {m: {str(b): v for b, v in t.items()} for m, t in acc_gaps.items()},
        "loss_gaps": {m: {str(b): v for b, v in t.items()} for m, t in loss_gaps.items()},
        "diverged": {m: {str(b): sum(bool(r.get("diverged")) for s, r in
                              zip(specs, sweep.results, strict=True)
                              if s.method == m and s.batch == b) for b in p.batches}
                     for m, _ in p.methods},
        "runs_computed": len(sweep.computed), "runs_cached": len(sweep.loaded),
        "training_seconds": sum(r.get("seconds", 0.0) for r in sweep.results),
        "preset_chosen_on_seeds": list(PRESET_SEEDS),
        "training_seeds_from": 1000 * (seed + SEED_OFFSET)}
    return FigureOutcome("ef", CLAIM, panels, png, data_out)


@figure("ef", CLAIM, data=tuple(dict.fromkeys(p.data for p in PRESETS.values())),
        quick_seconds=350)
def run(out: Path, preset: str = "quick", seed: int = 0, progress: bool = False,
        jobs: int = 1, executor: Executor | str | None = None) -> FigureOutcome:
    """Reproduce the EF-signSGD table with the ``quick`` or ``full`` preset (THEORY.md §8c)."""
    return reproduce(PRESETS[preset], out, seed=seed, progress=progress, jobs=jobs,
                     executor=executor)
