"""The advisor's outputs: a text table, ``result.json`` and one PNG, written atomically
(docs/DESIGN.md, "Atomic writes")."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from scipy import stats

from ..io import save_figure, write_json
from ..plotting import spans_decades
from .beyond import other_table_lines
from .predict import Advice, Prediction


def _g(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}g}"


def _nu_text(advice: Advice) -> str:
    fit = advice.measurement.fit
    lo, hi = fit.nu_interval
    nu = "∞ (Gaussian)" if math.isinf(fit.nu) else f"{fit.nu:.3g}"
    return f"ν̂ = {nu}, 95% interval [{_g(lo)}, {'∞' if math.isinf(hi) else _g(hi)}]"


def summary_lines(advice: Advice) -> list[str]:
    """The measured noise in a few lines."""
    m = advice.measurement
    k = m.kurtosis_summary()
    ph = m.phases
    snr = m.snr
    lines = [
        f"noise of {m.source}: d = {m.d}, {m.samples} mini-batches, "
        f"{m.kept} coordinates kept for the tail fit",
        f"tail: {_nu_text(advice)}; Hill α = {_g(m.hill.alpha)} ± {_g(m.hill.se, 2)} "
        f"(k = {m.hill.k}); excess kurtosis median {_g(k['median'])}, mean {_g(k['mean'])}",
        f"variance: {'finite' if m.finite_variance else 'INFINITE'} — {m.variance_verdict()}",
        batch_law_line(m),
        f"scale: Σ Var = {_g(m.variance_sum)}, median σ_j = "
        f"{_g(float(m.fit.scale[~m.fit.degenerate].median()))}, ‖∇f‖² ≈ {_g(m.grad_sq)}; "
        f"SNR |mean|/std median {_g(float(snr.median()))}",
        f"DSignSGD phases (Y = |∂f|/(√2σ)): Phase 1 {ph['phase1']:.0%}, Phase 2 "
        f"{ph['phase2']:.0%}, Phase 3 {ph['phase3']:.0%}",
        f"curvature L = {_g(advice.curvature)}" + (
            f" ({m.curvature.iterations} power iterations, residual {_g(m.curvature.residual, 2)})"
            if m.curvature is not None else "") +
        (f"; compute {1e3 * advice.compute_seconds:.3g} ms per gradient"
         if advice.compute_seconds is not None else ""),
    ]
    return lines + group_lines(m.groups, m.group_laws)


def batch_law_line(m: object) -> str:
    """γ̂ of the whole model (scale ∝ B^{−γ}, §5a) with α or why α is not given."""
    law = getattr(m, "batch_law", None)
    if law is None:
        return "batch law: not measured (needs 64 mini-batches); the rules assume γ = ½"
    scales = ", ".join(f"{b}: {_g(math.exp(v - law.log_scales[0]))}"
                       for b, v in zip(law.batches, law.log_scales, strict=True))
    return (f"batch law: scale ∝ B^−γ, {law.text()} (Gaussian ½) from means at B = "
            f"{'/'.join(map(str, law.batches))} (relative scales {scales}); {law.alpha_note}"
            + ("; FLAT: no batch recovers a loss" if law.flat else ""))


def group_lines(groups: dict, laws: dict | None = None) -> list[str]:
    """One line per parameter group: ν̂ ± se, Hill α ± se, phases, sparse coordinates."""
    if not groups:
        return []
    laws = laws or {}
    lines = ["per parameter group (Student-t ν̂ ± se on the kept coordinates, Hill α ± se, "
             "batch law γ̂ ± se, DSignSGD phases):"]
    width = max(len(name) for name in groups)
    for name, g in groups.items():
        if not math.isfinite(g.nu) and math.isnan(g.nu):
            lines.append(f"  {name:<{width}}  d = {g.size:,}: every kept coordinate is sparse "
                         f"(no noise to fit)")
            continue
        nu = "∞" if math.isinf(g.nu) else _g(g.nu)
        ph = g.phases
        lines.append(
            f"  {name:<{width}}  d = {g.size:,}  ν̂ = {nu} ± {_g(g.nu_se, 2)}  Hill α = "
            f"{_g(g.hill_alpha)} ± {_g(g.hill_se, 2)}  "
            f"{laws[name].text() if laws.get(name) is not None else 'γ̂ —'}  "
            f"P1 {ph['phase1']:.0%} P2 "
            f"{ph['phase2']:.0%} P3 {ph['phase3']:.0%}  ({g.kept:,} kept, {g.sparse:,} sparse)")
    return lines


def table(advice: Advice) -> str:
    """Predictions per method, the recommendation, warnings and assumptions as text."""
    header = ("method", "lr", "stationary loss", "rate", "drift", "ω̂ (bound)", "bytes/step",
              "collective", "compute ms", "codec ms", "comm ms", "batch@ref", "score")
    rows = []
    for p in advice.predictions:
        omega = "" if p.omega is None else f"{p.omega:.3g} ({_g(p.omega_nominal)})"
        loss = _g(p.stationary_loss) if p.finite else "none (" + (
            "unstable" if "unstable" in p.loss_note else "no mean" if "no mean" in p.loss_note
            else "infinite var.") + ")"
        rows.append((p.spec, _g(p.lr), loss, _g(p.rate), _g(p.drift), omega,
                     f"{p.bytes_per_step:,}", p.collective,
                     _g(None if p.match_compute_seconds is None and p.compute_seconds is None
                        else 1e3 * (p.match_compute_seconds if p.match_compute_seconds is not None
                                    else p.compute_seconds)),
                     _g(None if p.codec_seconds is None else 1e3 * p.codec_seconds),
                     _g(None if p.comm_seconds is None else 1e3 * p.comm_seconds),
                     str(p.match_batch or "—"), _g(p.score)))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = summary_lines(advice) + ["", fmt.format(*header)] + [fmt.format(*r) for r in rows]
    out.append("")
    for p in advice.predictions:
        if not p.finite:
            out.append(f"{p.spec}: {p.loss_note}")
    for p in advice.predictions:
        if p.adjustments:
            rules = "; or ".join(
                f"{a['knob']}: lr {_g(a['lr'], 4)}, batch {_g(a['batch'], 4)}, agents "
                f"{_g(a['agents'], 4)} [{a['formula']}]" if a.get("possible", True)
                else f"{a['knob']}: {a['formula']}" for a in p.adjustments)
            out.append(f"{p.spec} reaches the reference loss with {rules}")
    rec = advice.recommendation
    if rec is None:
        out.append("recommendation: none — no method has a finite predicted stationary loss")
    else:
        out.append(f"recommendation: {rec['spec']} with lr {_g(rec['lr'], 4)}, batch "
                   f"{rec['batch']}, agents {rec['agents']} — {rec['why']}")
    out += other_table_lines(advice.others)
    out += [f"warning: {w}" for w in advice.warnings]
    out += [f"assumption: {a}" for a in advice.assumptions]
    return "\n".join(out)


def plot(advice: Advice, path: str | Path) -> Path:
    """Four panels: phases, tail, predicted stationary loss, time (or bytes) per step."""
    m = advice.measurement
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0, 0]
    y = m.phase_y.clamp_min(1e-6).log10().numpy()
    ax.hist(y, bins=60, color="tab:blue", alpha=0.8)
    for thr, name in ((1.0, "Y = 1"), (1.5, "Y = 3/2")):
        ax.axvline(math.log10(thr), color="k", linestyle="--" if thr == 1 else ":", label=name)
    ph = m.phases
    ax.set(xlabel="log10 Y,  Y = |∂f_j|/(√2 σ_j)", ylabel="coordinates",
           title=f"DSignSGD phase per coordinate: P1 {ph['phase1']:.0%}, P2 {ph['phase2']:.0%}, "
                 f"P3 {ph['phase3']:.0%}")
    ax.legend()
    ax = axes[0, 1]
    if m.abs_z is not None and m.abs_z.numel():
        z = m.abs_z.numpy()
        surv = np.arange(1, z.size + 1) / z.size
        ax.loglog(z, surv, ".", markersize=2, label="measured |noise|/σ_j")
        grid = np.logspace(math.log10(max(z[-1], 1e-3)), math.log10(z[0]), 200)
        if math.isfinite(m.nu):
            ax.loglog(grid, 2 * stats.t.sf(grid, m.nu), label=f"Student-t ν̂ = {m.nu:.3g}")
        ax.loglog(grid, 2 * stats.norm.sf(grid), "--", label="Gaussian")
        ax.set_ylim(max(surv[0] / 3, 1e-7), 1.1)
        ax.set_xlim(0.1, None)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide
    ax.set(xlabel="t", ylabel="P(|Z| > t)", title=f"tail of the standardised noise "
           f"(Hill α = {m.hill.alpha:.3g})")
    ax.legend()
    specs = [p.spec for p in advice.predictions]
    pos = np.arange(len(specs))
    rec = advice.recommendation
    best = rec["spec"] if rec else None
    ax = axes[1, 0]
    losses = [p.stationary_loss if p.finite else np.nan for p in advice.predictions]
    colors = ["tab:green" if p.spec == best else "tab:gray" for p in advice.predictions]
    finite = [v for v in losses if np.isfinite(v) and v > 0]
    if finite and spans_decades(np.array(finite), 1.0):
        _dots(ax, pos, losses, colors)           # a bar's length means nothing on a log axis
        ax.set_ylim(min(finite) / 3, 10 * max(finite))  # room for the legend
    else:
        ax.bar(pos, losses, color=colors)
        if finite:
            ax.set_ylim(0, 1.35 * max(finite))
    if rec is not None:
        others = [p for p in advice.predictions if p.spec != rec["spec"]]
        reachable = [p for p in others if p.finite]
        reach = ("; larger batches bring the others down to it" if len(reachable) == len(others)
                 else "; larger batches bring the others with a finite loss down to it"
                 if reachable else "; no batch helps the others (infinite variance)")
        ax.axhline(rec["stationary_loss"], color="k", linestyle="--", linewidth=1,
                   label=f"reference loss ({advice.reference}){reach}")
        ax.legend(fontsize=7, loc="upper left")
    for i, p in enumerate(advice.predictions):
        if not p.finite:
            ax.text(i, 0.03, f"no finite loss: {loss_reason(p)}", ha="center", va="bottom",
                    fontsize=7, rotation=90, transform=ax.get_xaxis_transform())
    _method_ticks(ax, pos, specs, best)
    ax.set(ylabel="predicted stationary E f − f*",
           title=f"loss as measured: η = {advice.lr:g}, B = {advice.batch}, N = "
                 f"{advice.agents} (DSignSGD at its own η_s)")
    ax.title.set_fontsize(10)
    ax = axes[1, 1]
    if advice.bandwidth is not None:
        unit = advice.compute_seconds or 0.0
        comp = [1e3 * (p.match_compute_seconds if p.match_compute_seconds is not None
                       else unit) if p.finite else np.nan for p in advice.predictions]
        codec = [1e3 * (p.codec_seconds or 0.0) if p.finite else np.nan
                 for p in advice.predictions]
        comm = [1e3 * (p.comm_seconds or 0.0) if p.finite else np.nan
                for p in advice.predictions]
        parts = {"compute, at the batch that reaches the reference loss": comp,
                 "encode + decode (measured here)": codec,
                 f"communication ({advice.bandwidth * 8 / 1e9:.3g} Gbit/s, alpha-beta)": comm}
        scores = [1e3 * p.score if p.finite and p.score is not None and math.isfinite(p.score)
                  else np.nan for p in advice.predictions]
        totals = np.nan_to_num(comp) + np.nan_to_num(codec) + np.nan_to_num(comm)
        top = np.nanmax([*scores, *totals, 1e-9])
        shown = np.array([v for v in [*scores, *totals] if np.isfinite(v) and v > 0])
        if spans_decades(shown, 1.0):
            _time_dots(ax, pos, parts, totals)   # stacked bars would mislead on a log axis
            ax.set_ylim(shown.min() / 3, 3 * top)
        else:
            bottom = np.zeros(len(pos))
            for (label, values), color in zip(parts.items(),
                                              ("tab:orange", "tab:gray", "tab:purple"),
                                              strict=True):
                ax.bar(pos, values, bottom=bottom, color=color, label=label)
                bottom = bottom + np.nan_to_num(values)
            ax.set_ylim(0, 1.15 * top)
        ax.plot(pos, scores, "kD", markersize=6,
                label="score = time per step ÷ speed (time per unit of progress); "
                      "lowest wins")
        for i, p in enumerate(advice.predictions):
            if not p.finite:
                ax.text(i, 0.03, f"no finite loss: {loss_reason(p)}", ha="center",
                        va="bottom", fontsize=7, rotation=90,
                        transform=ax.get_xaxis_transform())
        ax.set(ylabel="ms per step", title="predicted time per step at the reference loss")
        ax.title.set_fontsize(10)
        # under the axes, so that it covers no method's marker or bar
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2,
                  frameon=False)
    else:
        sizes = [float(p.bytes_per_step) for p in advice.predictions]
        _dots(ax, pos, sizes, ["tab:green" if p.spec == best else "tab:purple"
                               for p in advice.predictions], fmt="{:.3g} B")
        ax.set_ylim(min(sizes) / 3, 5 * max(sizes))
        ax.set(ylabel="bytes per agent per step", title="message size (no --bandwidth given)")
    _method_ticks(ax, pos, specs, best)
    if rec is not None:
        headline = (f"recommended: {rec['spec']} at η = {rec['lr']:.3g}, B = {rec['batch']}, "
                    f"N = {rec['agents']} (green)")
    else:
        headline = "no recommendation: no method has a finite predicted stationary loss"
    fig.suptitle(f"compsde advise: {m.source}\n{headline}", fontsize=11)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def _dots(ax: plt.Axes, pos: np.ndarray, values: list[float], colors: list[str],
          fmt: str = "{:.3g}") -> None:
    """One marker per method on a log axis, its value written beside it (bars, whose length
    starts at an arbitrary bottom, would mislead there)."""
    ax.set_yscale("log")
    ax.scatter(pos, values, c=colors, s=70, zorder=3, edgecolors="black", linewidths=0.5)
    for x, v in zip(pos, values, strict=True):
        if np.isfinite(v) and v > 0:
            ax.annotate(fmt.format(v), (x, v), xytext=(0, 8), textcoords="offset points",
                        ha="center", fontsize=7)
    ax.grid(alpha=0.3, axis="y", which="both")


def _time_dots(ax: plt.Axes, pos: np.ndarray, parts: dict[str, list[float]],
               totals: np.ndarray) -> None:
    """The time panel on a log axis: each part of a step's time and their sum as markers."""
    ax.set_yscale("log")
    for (label, values), (marker, color) in zip(
            parts.items(), (("o", "tab:orange"), ("s", "tab:gray"), ("^", "tab:purple")),
            strict=True):
        shown = [v if np.isfinite(v) and v > 0 else np.nan for v in values]
        ax.plot(pos, shown, marker, color=color, markersize=7, label=label, ls="none")
    ax.plot(pos, [t if t > 0 else np.nan for t in totals], "_", color="black", markersize=22,
            markeredgewidth=2, label="time per step (the sum)", ls="none")
    ax.grid(alpha=0.3, axis="y", which="both")


def loss_reason(p: Prediction) -> str:
    """Why a method has no stationary loss, in two or three words (the table's wording)."""
    note = p.loss_note
    return ("unstable at this η" if "unstable" in note else "noise has no mean"
            if "no mean" in note else "infinite variance" if "infinite" in note.lower()
            or "§6" in note else "none predicted")


def _method_ticks(ax: plt.Axes, pos: np.ndarray, specs: list[str], best: str | None) -> None:
    """Method names under the bars, the recommended one in bold green."""
    ax.set_xticks(pos, [s.removeprefix("dcsgd:") if s.startswith("dcsgd:") else s
                        for s in specs], rotation=25, ha="right", fontsize=8)
    for label, spec in zip(ax.get_xticklabels(), specs, strict=True):
        if spec == best:
            label.set_color("tab:green")
            label.set_fontweight("bold")
    ax.set_xlabel("method (DCSGD compressors by name)", fontsize=8)
    ax.set_xlim(-0.6, len(specs) - 0.4)          # keep the first label off the axis


def save(advice: Advice, out_dir: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``result.json`` and ``advise.png`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    data = advice.to_dict() | {"table": table(advice).splitlines()} | (extra or {})
    return write_json(out_dir / "result.json", data), plot(advice, out_dir / "advise.png")
