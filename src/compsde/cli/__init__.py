"""The ``compsde`` command line: one subcommand per job, every run writes ``result.json``."""

from __future__ import annotations

import sys

import click

from .advise_cmd import advise_command
from .common import run_cli, use_file_backend
from .demo_cmd import demo_command
from .reproduce_cmd import reproduce_command
from .scale_cmd import scale_command
from .sde_cmd import sde_command
from .simulate_cmd import simulate_command
from .train_cmd import train_command
from .validate_cmd import validate_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compsde")
def cli() -> None:
    """Simulate, model and run communication-compressed distributed training."""


cli.add_command(demo_command)
cli.add_command(simulate_command)
cli.add_command(reproduce_command)
cli.add_command(scale_command)
cli.add_command(train_command)
cli.add_command(sde_command)
cli.add_command(validate_command)
cli.add_command(advise_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``compsde`` console script."""
    use_file_backend()
    code = run_cli(cli, argv)
    if argv is None:
        sys.exit(code)
    return code
