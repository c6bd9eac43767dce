"""Shared CLI flags and error handling: user mistakes print one line and exit with code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

EXIT_USAGE = 2


def run_cli(group: click.Group, argv: list[str] | None) -> int:
    """Run ``group``; a ValueError or usage error becomes ``error: …`` on one line, exit 2."""
    try:
        code = group.main(args=argv, prog_name="compsde", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}".replace("\n", " "), err=True)
        return EXIT_USAGE
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else repr(exc)
        click.echo(f"error: {message}", err=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    return code if isinstance(code, int) else 0


def use_file_backend() -> None:
    """Draw with matplotlib's non-interactive Agg backend: command-line runs only write PNGs.

    Library modules never choose a backend; only entry points call this.
    """
    import matplotlib

    matplotlib.use("Agg")


def problem_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The flags every simulation-like command shares (DESIGN.md contracts)."""
    options = [
        click.option("--method", default="dsgd", show_default=True,
                     help="dsgd | dsignsgd | dcsgd:<compressor>, e.g. dcsgd:randk:ratio=0.1"),
        click.option("--landscape", default="quadratic:d=5", show_default=True,
                     help="quadratic:d=D[,eig=A:B] | rosenbrock[:d=D] | saddle[:d=D]"),
        click.option("--noise", default="gaussian:scale=1", show_default=True,
                     help="gaussian:scale=S | student-t:nu=NU,scale=S; per-agent scales "
                          "as scale=1/2/3/4"),
        click.option("--lr", type=float, default=0.01, show_default=True,
                     help="learning rate η"),
        click.option("--lr-schedule", default="constant", show_default=True,
                     type=click.Choice(["constant", "inv-sqrt"]),
                     help="η_k = η, or η/√(k+1)"),
        click.option("--agents", type=int, default=4, show_default=True, help="agents N"),
        click.option("--batch", type=int, default=1, show_default=True,
                     help="per-agent batch B (noise scale divided by √B)"),
        click.option("--steps", type=int, default=1000, show_default=True,
                     help="iterations k"),
        click.option("--runs", type=int, default=100, show_default=True,
                     help="Monte-Carlo runs R"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--dtype", default="float64", show_default=True,
                     type=click.Choice(["float32", "float64"])),
        click.option("--x0", type=float, default=1.0, show_default=True,
                     help="start value of every coordinate"),
        click.option("--record-every", type=int, default=None,
                     help="record the loss every this many steps (default: steps/200)"),
        click.option("--device", default="cpu", show_default=True, help="cpu | cuda[:i]"),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     default=Path("results/run"), show_default=True,
                     help="folder for result.json (and the PNG)"),
        click.option("--plot/--no-plot", default=False, show_default=True,
                     help="also write loss.png"),
        click.option("--progress/--no-progress", default=True, show_default=True,
                     help="progress bar on stderr"),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


EXECUTOR_HELP = ("where the work runs: local | processes:N (N worker processes) | ray | "
                 "ray:ADDRESS (a Ray cluster; `auto` for the environment's; needs "
                 "pip install 'compsde[ray]'); results do not depend on it")


def executor_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--executor`` (``local`` by default), shared by simulate, sde, validate and reproduce."""
    return click.option("--executor", default="local", show_default=True,
                        help=EXECUTOR_HELP)(func)


def parse_executor(spec: str | None, jobs: int = 1) -> Any:
    """The executor of ``--executor`` (``--jobs N`` is its shorthand ``processes:N``); a bad
    value raises ValueError naming the flag, before any work starts."""
    from ..executors import resolve

    if jobs > 1 and spec == "local":
        spec = None  # --jobs N alone
    try:
        return resolve(spec, jobs)
    except ValueError as exc:
        text = str(exc)
        for name in ("jobs", "executor"):
            if text.startswith(name):
                text = f"--{text}"
        if not text.startswith("--"):
            text = f"--executor {spec}: {text}"
        raise ValueError(text) from None


def default_record_every(steps: int, record_every: int | None) -> int:
    return record_every if record_every is not None else max(1, steps // 200)


def progress_enabled(flag: bool) -> bool:
    return flag and sys.stderr.isatty()
