"""Shared CLI flags and error handling: user mistakes print one line and exit with code 2."""

from __future__ import annotations

import fcntl
import functools
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from .._checks import check_device, check_out_dir

EXIT_USAGE = 2
#: the largest --seed of the figures and the demo (their runs derive seeds from it)
SEED_MAX = 2**32 - 1
_LEADING_NAME = re.compile(r"^([a-z][a-z0-9_-]*[a-z0-9])(?=[\s:'\"(,]|$)")


def _subcommand(group: click.Group, argv: list[str]) -> click.Command | None:
    for arg in argv:
        if not arg.startswith("-"):
            return group.commands.get(arg)
    return None


def flag_message(command: click.Command | None, message: str) -> str:
    """Name the flag as typed: ``record_every must be …`` → ``--record-every must be …``.

    The library's errors name the Python parameter; when it is one of ``command``'s options
    the CLI shows its flag instead (docs/DESIGN.md, "Errors: one line, exit 2").
    """
    match = _LEADING_NAME.match(message)
    if command is None or match is None:
        return message
    flags = {}
    for param in command.params:
        long = [o for o in param.opts if o.startswith("--")]
        if isinstance(param, click.Option) and long and param.name:
            flags[param.name] = long[0]
            flags.setdefault(long[0][2:].replace("-", "_"), long[0])
    flag = flags.get(match.group(1).replace("-", "_"))
    return message if flag is None else flag + message[match.end():]


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    click.echo(f"warning: {str(message).splitlines()[0]}", err=True)


def check_environment() -> None:
    """The environment variables compsde reads, checked before any work (``ValueError``):
    ``COMPSDE_NATIVE`` (:func:`compsde.compressors.native.enabled`)."""
    from ..compressors import native

    native.enabled()


def run_cli(group: click.Group, argv: list[str] | None) -> int:
    """Run ``group``; a ValueError or usage error becomes ``error: …`` on one line, exit 2.

    ``compsde`` alone prints the normal help; warnings print as one ``warning: …`` line.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        with click.Context(group, info_name="compsde") as ctx:
            click.echo(group.get_help(ctx))
        return 0
    command = _subcommand(group, args)
    try:
        if not set(args) & {"-h", "--help", "--version"}:
            check_environment()
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code = group.main(args=args, prog_name="compsde", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except SystemExit as done:                      # train forwards its trainer's exit code
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}".replace("\n", " "), err=True)
        return EXIT_USAGE
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else repr(exc)
        click.echo(f"error: {flag_message(command, message)}", err=True)
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


class OutDir(click.ParamType):
    """``--out``: a folder path; the empty string is refused (it would mean the current
    folder without saying so)."""

    name = "DIR"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Path:
        if isinstance(value, Path):
            return value
        if not str(value).strip():
            self.fail("must be a folder path, got '' (give --out . for the current folder)",
                      param, ctx)
        return Path(value)


OUT_DIR = OutDir()
LOCK_NAME = ".compsde.lock"


def prepare_out(out: Path, files: Iterable[str] = (), folders: Iterable[str] = ()) -> Path:
    """Before any work: ``--out`` can be created and written, each of ``files`` (names in it
    the run writes) is not a folder, each of ``folders`` (e.g. ``cache``) is a writable folder
    where it exists, and no other run uses ``--out`` (:func:`lock_out`). ValueError naming
    ``--out`` otherwise."""
    folder = check_out_dir(out, "--out")
    for name in files:
        target = folder / name
        if target.is_dir():
            raise ValueError(f"--out {str(folder)!r}: {str(target)!r} is a folder where the "
                             f"run writes a file; remove it or choose another --out")
    for name in folders:
        target = folder / name
        if target.exists() and not target.is_dir():
            raise ValueError(f"--out {str(folder)!r}: {str(target)!r} is a file where the run "
                             f"keeps a folder; remove it or choose another --out")
        if target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
            raise ValueError(f"--out {str(folder)!r}: the folder {str(target)!r} cannot be "
                             f"written; choose another --out")
    lock_out(folder)
    return folder


_HELD: list[Any] = []  # locks held outside a click context (released at exit)


def lock_out(folder: Path) -> None:
    """Hold an exclusive lock on ``folder`` (``flock`` of ``folder/.compsde.lock``) for the rest
    of the command; ValueError naming ``--out`` when another run holds it. The lock ends with
    the command (or the process), so a killed run never leaves it behind."""
    path = folder / LOCK_NAME
    try:
        handle = open(path, "a+")  # held for the command, closed when it ends
    except OSError as exc:
        raise ValueError(f"--out {str(folder)!r}: cannot create its lock file "
                         f"({exc.strerror or type(exc).__name__})") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        who = f" (process {holder})" if holder.isdigit() else ""
        raise ValueError(f"--out {str(folder)!r} is in use by another compsde run{who}; wait "
                         f"for it to finish or choose another --out") from None
    except OSError as exc:  # a file system without locks: run, but say what is not guarded
        warnings.warn(f"--out {str(folder)!r} cannot be locked ({exc.strerror or exc}); "
                      f"another run writing there at the same time would not be stopped",
                      stacklevel=2)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(handle.close)
    else:
        _HELD.append(handle)


def _device_flag(ctx: click.Context, param: click.Parameter, value: str) -> str:
    check_device(value, "--device")
    return value


def parse_x0(text: str) -> float | list[float]:
    """``--x0``: one number for every coordinate, or one per coordinate separated by commas."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--x0 must be a number or numbers separated by commas (one per "
                         f"coordinate, e.g. 1,-1,0.5), got {text!r}") from None
    return values[0] if len(values) == 1 else values


def problem_options(default_out: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The flags every simulation-like command shares (docs/DESIGN.md, "The command line");
    ``--out`` defaults to ``default_out`` (each command its own folder)."""
    return functools.partial(_add_problem_options, default_out=default_out)


def _add_problem_options(func: Callable[..., Any], default_out: str) -> Callable[..., Any]:
    options = [
        click.option("--method", default="dsgd", show_default=True,
                     help="dsgd | dsignsgd[:vote=majority] | dcsgd:<compressor>, e.g. "
                          "dcsgd:randk:ratio=0.1 | signum:beta=B[,vote=majority] | scaledsign | "
                          "ef21:<compressor>, e.g. ef21:topk:ratio=0.1 | ef-signsgd"),
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
        click.option("--seed", type=int, default=0, show_default=True,
                     help="seed of the one random generator; same seed, same result"),
        click.option("--dtype", default="float64", show_default=True,
                     type=click.Choice(["float32", "float64"]),
                     help="floating-point precision of the simulation"),
        click.option("--x0", default="1", show_default=True,
                     help="start point: one number for every coordinate, or one per "
                          "coordinate separated by commas (e.g. 1,-1,0.5)"),
        click.option("--record-every", type=int, default=None,
                     help="record the loss every this many steps (default: steps/200)"),
        click.option("--device", default="cpu", show_default=True, callback=_device_flag,
                     help="cpu | cuda[:i]; checked before the run"),
        click.option("--out", type=OUT_DIR,
                     default=Path(default_out), show_default=True,
                     help="folder for result.json (and the PNG); checked before the run"),
        click.option("--allow-long", is_flag=True, default=False,
                     help="start a run even when it would take more than a day at the "
                          "fastest (refused otherwise, with the estimate)"),
        click.option("--plot/--no-plot", default=False, show_default=True,
                     help="also write loss.png"),
        click.option("--progress/--no-progress", default=True, show_default=True,
                     help="progress on stderr: a bar on a terminal, else a line every "
                          "10 s"),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


EXECUTOR_HELP = ("where the work runs: local | processes:N (N worker processes) | ray | "
                 "ray:ADDRESS (a Ray cluster; `auto` for the environment's; needs "
                 "pip install 'compsde[ray]'); results do not depend on it")


def executor_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--executor`` (``local`` by default), shared by simulate, sde, validate and reproduce."""
    return click.option("--executor", default="local", show_default=True,
                        help=EXECUTOR_HELP)(func)


def jobs_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--jobs N``, the shorthand of ``--executor processes:N`` (simulate, sde, validate)."""
    return click.option("--jobs", type=int, default=1, show_default=True,
                        help="worker processes of this machine: the shorthand of --executor "
                             "processes:N (results do not depend on it)")(func)


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


def local_workers(executor: Any) -> int:
    """Processes sharing a run's chunks on this machine (``processes:N``: N; else 1)."""
    return int(executor.workers) if executor.spec.startswith("processes:") else 1


def time_flag(steps: Any, sizes: dict[str, Any]) -> tuple[str, Any]:
    """The flag a run's time is blamed on: ``--steps``, or the largest of ``sizes`` (e.g.
    ``--runs``, ``--agents``) when their product, not the step count, sets the time of a step
    (:func:`compsde.limits.least_seconds`)."""
    from ..limits import NUMBER_RATE, STEP_FLOOR

    numbers = 1.0
    for value in sizes.values():
        numbers *= max(float(value), 1.0)
    if sizes and numbers / NUMBER_RATE > STEP_FLOOR:
        flag = max(sizes, key=lambda name: float(sizes[name]))
        return flag, sizes[flag]
    return "--steps", steps


def check_run_time(flag: str, value: Any, steps: float, numbers: float, *, allow: bool,
                   probe: Callable[[int], Any] | None = None, workers: int = 1,
                   fix: str | None = None) -> None:
    """Before the run: refuse one that takes more than a day even at the fastest step
    (:mod:`compsde.limits`); one whose lower bound exceeds a minute is timed on its first steps
    (``probe(k)`` runs k of them), refused above a day and its estimate printed as a note.
    ``allow`` (``--allow-long``) lifts the refusals and the probe."""
    from ..limits import (
        PROBE_ABOVE,
        check_duration,
        format_duration,
        least_seconds,
        measured_seconds,
    )

    lower = least_seconds(steps, numbers)
    check_duration(flag, value, lower, allow=allow, fix=fix)
    if probe is None or allow or lower < PROBE_ABOVE:
        return
    seconds = measured_seconds(probe, steps, workers)
    basis = "measured on its first steps"
    check_duration(flag, value, seconds, allow=allow, fix=fix, basis=basis, least=False)
    click.echo(f"note: this run takes about {format_duration(seconds)} ({basis})", err=True)


def default_record_every(steps: int, record_every: int | None) -> int:
    return record_every if record_every is not None else max(1, steps // 200)


def progress_enabled(flag: bool) -> bool:
    """Progress is on unless switched off: a bar on a terminal, periodic lines elsewhere
    (:func:`compsde.progress.progress_bar` picks)."""
    return flag
