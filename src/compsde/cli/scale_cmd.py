"""``compsde scale``: how lr, batch and agents must change to keep a baseline's loss (§5)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import noise as noise_laws
from ..io import versions, write_json
from ..scaling import solve
from ..scaling.verdict import judge_recommendation
from ..verdicts import summary
from .common import OUT_DIR, prepare_out


def _parse_set(items: tuple[str, ...]) -> dict[str, float]:
    fixed: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set must look like knob=value (e.g. agents=16), got {item!r}")
        try:
            fixed[key.strip().lower()] = float(value)
        except ValueError:
            raise ValueError(f"--set: {key.strip()} must be a number, got {value!r}") from None
    return fixed


def _noise(spec: str) -> tuple[float, float | None]:
    law = noise_laws.make(spec)
    if law.scale.dim() != 0:
        raise ValueError(f"--noise must have one scale for scale (per-agent scales are not "
                         f"supported here), got {spec!r}")
    return float(law.scale), getattr(law, "nu", None)


@click.command("scale")
@click.option("--baseline", default="dsgd", show_default=True,
              help="baseline method: dsgd | dsignsgd | dcsgd:<compressor> | dcsgd:omega=W")
@click.option("--lr", type=float, required=True, help="baseline learning rate η")
@click.option("--batch", type=int, required=True, help="baseline per-agent batch B")
@click.option("--agents", type=int, required=True, help="baseline number of agents N")
@click.option("--target", required=True,
              help="target method, e.g. dcsgd:randk:ratio=0.1, dcsgd:omega=9, dsignsgd")
@click.option("--vary", required=True, help="knobs that may change: lr, batch, agents "
                                            "(comma-separated, e.g. batch or lr,batch)")
@click.option("--L", "L", type=float, default=None,
              help="largest Hessian eigenvalue (needed by the DCSGD rules)")
@click.option("--dim", type=int, default=None,
              help="model dimension d (when the compressor's ω depends on it)")
@click.option("--noise", default="gaussian:scale=1", show_default=True,
              help="gradient-noise law per sample (matters between dsignsgd and dsgd/dcsgd)")
@click.option("--convention", type=click.Choice(["T", "K"], case_sensitive=False),
              default="T", show_default=True, metavar="[T|K]",
              help="T: equal SDE time t = k·lr; K: equal iteration count")
@click.option("--set", "set_", multiple=True, help="force a target knob, e.g. --set agents=16")
@click.option("--first-order", is_flag=True, help="drop the ηLω/(2N) term (no L needed)")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of the table")
@click.option("--check/--no-check", default=True, show_default=True,
              help="simulate the baseline and the recommended target on ½L‖x‖² and judge "
                   "that the target recovers the baseline's stationary loss (exit 1 if not)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the check's runs")
@click.option("--out", type=OUT_DIR,
              default=Path("results/scale"), show_default=True,
              help="folder for result.json; checked before the computation")
def scale_command(baseline: str, lr: float, batch: int, agents: int, target: str, vary: str,
                  L: float | None, dim: int | None, noise: str, convention: str,
                  set_: tuple[str, ...], first_order: bool, as_json: bool, check: bool,
                  seed: int, out: Path) -> None:
    """Recommend lr / batch / agents for TARGET so that it matches BASELINE's loss; with
    --check (default) simulate both and judge it (THEORY.md §5, §10)."""
    if seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {seed}")
    sigma, nu = _noise(noise)
    fixed = _parse_set(set_)
    prepare_out(out, files=["result.json"])
    rec = solve(baseline, lr=lr, batch=batch, agents=agents, target=target, vary=vary, L=L,
                dim=dim, sigma=sigma, nu=nu, convention=convention.upper(),
                first_order=first_order, fixed=fixed)
    command = {"baseline": baseline, "lr": lr, "batch": batch, "agents": agents,
               "target": target, "vary": vary, "L": L, "dim": dim, "noise": noise,
               "convention": convention.upper(), "set": fixed, "first_order": first_order,
               "check": check, "seed": seed}
    judged = judge_recommendation(rec, L=L, sigma=sigma, nu=nu, dim=dim, seed=seed) \
        if check else None
    data = rec.to_dict() | {"table": [dict(zip(("knob", "baseline", "recommended", "why"), row,
                                                strict=True)) for row in rec.rows()],
                            "command": command, "versions": versions(),
                            "verdict": judged["verdict"] if judged else "unchecked",
                            "check": judged}
    path = write_json(out / "result.json", data)
    failed = judged is not None and judged["verdict"] != "pass"
    if as_json:
        click.echo(json.dumps(json.loads(path.read_text()), indent=2))
        if failed:
            raise click.exceptions.Exit(1)
        return
    rows = rec.rows()
    widths = [max(len(r[i]) for r in [("knob", "baseline", "recommended", "why"), *rows])
              for i in range(3)]
    for row in [("knob", "baseline", "recommended", "why"), *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
                   + "  " + row[3])
    pred = rec.predicted
    click.echo(f"predicted stationary loss per coordinate: baseline {pred['baseline']:.4g}, "
               f"recommended {pred['target']:.4g}, target unchanged "
               f"{pred['target_unchanged']:.4g}")
    click.echo("matched (" + rec.convention + "): " + ", ".join(
        f"{k} {'yes' if v else 'no'}" for k, v in rec.matched.items()))
    for note in rec.notes:
        click.echo(f"note: {note}")
    if judged is not None:
        click.echo(f"check on {judged['landscape']}, {judged['runs']} runs per arm: "
                   f"{summary(judged)}")
    click.echo(f"wrote {path}")
    if failed:
        raise click.exceptions.Exit(1)
