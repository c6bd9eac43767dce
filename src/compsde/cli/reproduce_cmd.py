"""``compsde reproduce NAME|all``: paper figures as PNG plus JSON with a verdict per panel.

``reproduce all`` runs every figure the registry finds (THEORY.md §7) and keeps
``OUT/REPORT.md`` up to date after each one: claim, verdict, PNG and runtime per figure. Sweeps
cache every finished run under ``OUT/cache/``, so an interrupted reproduction started again
recomputes nothing that had finished.
"""

from __future__ import annotations

import inspect
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click

from .._checks import check_int
from ..experiments import load_all
from ..experiments.registry import Figure, FigureOutcome
from ..experiments.report import ReportRow, write_report
from ..nn.data import check_data
from .common import (
    OUT_DIR,
    SEED_MAX,
    executor_option,
    parse_executor,
    prepare_out,
    progress_enabled,
)


def _accepts(figure: Figure, option: str) -> bool:
    return option in inspect.signature(figure.runner).parameters


def warn_full_without_gpu(names: list[str], figures: dict[str, Figure], preset: str) -> None:
    """One line on stderr when ``--full`` would train networks (fig2/fig4) without a GPU."""
    import torch

    deep = [n for n in names if _accepts(figures[n], "distributed")]
    if preset == "full" and deep and not torch.cuda.is_available():
        click.echo(f"warning: --full trains paper-scale networks for {', '.join(deep)} and is "
                   f"sized for a GPU; on this CPU it takes days (finished runs are cached, so "
                   f"Ctrl-C loses nothing)", err=True)


def _options(figure: Figure, *, distributed: bool, jobs: int,
             executor: str = "local") -> dict[str, Any]:
    """The extra runner options the figure takes: ``distributed`` if set, ``jobs`` if > 1,
    ``executor`` (its spec) if not local."""
    options: dict[str, Any] = {}
    if distributed and _accepts(figure, "distributed"):
        options["distributed"] = True
    if jobs > 1 and _accepts(figure, "jobs"):
        options["jobs"] = jobs
    if executor != "local" and _accepts(figure, "executor"):
        options["executor"] = executor
    return options


def available_cores() -> int:
    """The CPU cores this process may use (the default of ``--jobs``)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _note_expected_time(figure: Figure, preset: str, jobs: int) -> None:
    """One ``note:`` line on stderr before a figure that takes more than a minute."""
    runs_at_once = jobs if _accepts(figure, "jobs") else 1
    seconds = figure.expected_seconds(preset, runs_at_once)
    if seconds is not None and seconds > 60:
        click.echo(f"note: {figure.name} --{preset} takes about {seconds / 60:.0f} min here "
                   f"with {runs_at_once} job(s) ({figure.quick_seconds / 60:.0f} min with one "
                   f"job on 2 idle cores; finished runs are cached)", err=True)


def _outputs(names: list[str], report: bool) -> list[str]:
    """The files ``reproduce`` writes into ``--out`` for ``names`` (and REPORT.md for all)."""
    files = [f"{n}{suffix}" for n in names for suffix in (".png", ".json")]
    return [*files, "REPORT.md"] if report else files


def run_figure(figure: Figure, out: Path, *, preset: str, seed: int, progress: bool,
               options: dict[str, Any] | None = None, use_cache: bool = True) -> FigureOutcome:
    """``figure.run`` with extra runner options (e.g. ``distributed``) where given."""
    return figure.run(out, preset=preset, seed=seed, progress=progress, use_cache=use_cache,
                      **(options or {}))


def _echo_outcome(name: str, outcome: FigureOutcome, out: Path) -> None:
    for panel, info in outcome.panels.items():
        click.echo(f"  {panel}: {info.get('verdict')} — {info.get('detail', '')}")
    click.echo(f"{name}: {outcome.verdict} in {outcome.seconds:.0f} s; "
               f"wrote {outcome.png} and {out / (name + '.json')}")


def _command_line() -> str:
    args = sys.argv[1:] if sys.argv and Path(sys.argv[0]).name.startswith("compsde") else []
    return "compsde " + shlex.join(args) if args else "compsde reproduce all"


def reproduce_all(figures: dict[str, Figure], out: Path, *, preset: str, seed: int,
                  progress: bool, distributed: bool = False, jobs: int = 1,
                  command: str = "compsde reproduce all",
                  executor: str = "local", use_cache: bool = True) -> list[ReportRow]:
    """Run every figure, rewriting ``OUT/REPORT.md`` after each; returns the report's rows.

    A figure whose code raises is reported as ``error`` and the others still run; an interrupt
    (Ctrl-C) stops at once, leaving the report with the remaining figures ``pending``.
    """
    names = sorted(figures)
    rows = {n: ReportRow(n, figures[n].claim, "pending") for n in names}
    report = Path(out) / "REPORT.md"
    started = time.perf_counter()

    def write() -> None:
        write_report(report, list(rows.values()), preset=preset, seed=seed, command=command,
                     total_seconds=time.perf_counter() - started)

    write()
    for name in names:
        figure = figures[name]
        options = _options(figure, distributed=distributed, jobs=jobs, executor=executor)
        click.echo(f"== {name}: {figure.claim}")
        begun = time.perf_counter()
        try:
            outcome = run_figure(figure, out, preset=preset, seed=seed, progress=progress,
                                 options=options, use_cache=use_cache)
        except Exception as exc:  # a broken figure must not hide the others' results
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            click.echo(f"{name}: error — {reason}", err=True)
            click.echo("".join(traceback.format_exception(exc)[-3:]).rstrip(), err=True)
            rows[name] = ReportRow(name, figure.claim, "error",
                                   seconds=time.perf_counter() - begun, note=reason)
        else:
            _echo_outcome(name, outcome, out)
            note = str(outcome.data.get("note", "")) if outcome.data else ""
            rows[name] = ReportRow.from_outcome(outcome, note=note)
        write()
    click.echo(f"wrote {report}")
    return list(rows.values())


@click.command("reproduce")
@click.argument("name", required=False)
@click.option("--quick", is_flag=True, default=False,
              help="small preset for 2 CPU cores (the default)")
@click.option("--full", is_flag=True, default=False,
              help="paper-scale preset (500 Monte-Carlo runs, paper-size networks; for a GPU)")
@click.option("--out", type=OUT_DIR,
              default=Path("results"), show_default=True,
              help="folder for NAME.png, NAME.json, REPORT.md and the run cache; checked "
                   "before any work")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of the figure's runs; another seed draws another set of runs")
@click.option("--distributed", is_flag=True, default=False,
              help="fig2/fig4: run each training run with torchrun (one process per agent) "
                   "instead of simulating the agents in one process")
@click.option("--jobs", type=int, default=None,
              help="fig2/fig4/lm: training runs computed at once, each in its own process "
                   "(results do not depend on it)  [default: the CPU cores this process may "
                   "use]")
@click.option("--no-cache", "no_cache", is_flag=True, default=False,
              help="recompute every run instead of reusing OUT/cache (the cache is refreshed)")
@executor_option
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="progress on stderr: a bar on a terminal, else a line every 10 s")
def reproduce_command(name: str | None, quick: bool, full: bool, out: Path, seed: int,
                      distributed: bool, jobs: int, no_cache: bool, progress: bool,
                      executor: str) -> None:
    """Reproduce figure NAME: fig1, fig2, fig3, fig4, fig5 (the paper's figures), lm (a GPT on
    English text, beyond the paper) or `all` of them.

    Writes OUT/NAME.png and OUT/NAME.json; `all` also writes OUT/REPORT.md. Finished training
    runs are cached under OUT/cache and reused when the command is started again.
    """
    figures = load_all()
    names = ", ".join(["all", *sorted(figures)])
    if name is None:
        raise ValueError(f"reproduce needs a figure NAME: one of {names}")
    if name != "all" and name not in figures:
        raise ValueError(f"figure must be one of {names}, got {name!r}")
    if quick and full:
        raise ValueError("--quick and --full contradict each other; give one of them")
    preset = "full" if full else "quick"
    typed_jobs = jobs is not None
    jobs = check_int("--jobs", jobs, minimum=1) if typed_jobs else available_cores()
    check_int("--seed", seed, minimum=0, maximum=SEED_MAX)
    typed = f"--executor {executor}" if executor != "local" else "--jobs"
    typed_jobs = typed_jobs or executor != "local"     # asked for, not the default
    executor = parse_executor(executor, jobs).spec  # fig2/fig4: one training run per task
    if executor.startswith("processes:"):
        jobs, executor = int(executor.partition(":")[2]), "local"  # today's --jobs path
    if name != "all":
        for option, wanted in (("distributed", distributed), ("jobs", typed_jobs and jobs > 1),
                               ("executor", executor != "local")):
            able = sorted(n for n, f in figures.items() if _accepts(f, option))
            if wanted and name not in able:
                flag = typed if option in ("jobs", "executor") else f"--{option}"
                raise ValueError(f"{flag} is available for figure "
                                 f"{', '.join(able) or '(none)'}, got {name!r}")
    chosen = sorted(figures) if name == "all" else [name]
    check_data(d for n in chosen for d in figures[n].data)   # one line naming the install
    prepare_out(out, files=_outputs(chosen, name == "all"),
                folders=["cache", *(f"cache/{n}" for n in chosen)])
    show = progress_enabled(progress)
    for chosen_name in chosen:
        _note_expected_time(figures[chosen_name], preset, jobs)
    if name == "all":
        warn_full_without_gpu(sorted(figures), figures, preset)
        rows = reproduce_all(figures, out, preset=preset, seed=seed, progress=show,
                             distributed=distributed, jobs=jobs, command=_command_line(),
                             executor=executor, use_cache=not no_cache)
        if any(r.status != "pass" for r in rows):
            raise click.exceptions.Exit(1)
        return
    figure = figures[name]
    options = _options(figure, distributed=distributed, jobs=jobs, executor=executor)
    warn_full_without_gpu([name], figures, preset)
    outcome = run_figure(figure, out, preset=preset, seed=seed, progress=show, options=options,
                         use_cache=not no_cache)
    _echo_outcome(name, outcome, out)
    if outcome.verdict != "pass":
        raise click.exceptions.Exit(1)
