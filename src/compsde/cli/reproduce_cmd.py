"""``compsde reproduce NAME``: one paper figure as a PNG plus JSON with a verdict per panel."""

from __future__ import annotations

from pathlib import Path

import click

from ..experiments import load_all
from .common import progress_enabled


@click.command("reproduce")
@click.argument("name")
@click.option("--quick", "preset", flag_value="quick", default=True,
              help="small preset for 2 CPU cores (default)")
@click.option("--full", "preset", flag_value="full", help="paper-scale preset")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def reproduce_command(name: str, preset: str, out: Path, seed: int, progress: bool) -> None:
    """Reproduce figure NAME of the paper (fig1, fig3, …); writes OUT/NAME.png and .json."""
    figures = load_all()
    if name not in figures:
        raise ValueError(f"figure must be one of {', '.join(sorted(figures)) or 'none yet'}, "
                         f"got {name!r}")
    outcome = figures[name].run(out, preset=preset, seed=seed,
                                progress=progress_enabled(progress))
    for panel, info in outcome.panels.items():
        click.echo(f"  {panel}: {info.get('verdict')} — {info.get('detail', '')}")
    click.echo(f"{name}: {outcome.verdict} in {outcome.seconds:.0f} s; "
               f"wrote {outcome.png} and {out / (name + '.json')}")
    if outcome.verdict != "pass":
        raise click.exceptions.Exit(1)
