"""``compsde train``: the torchrun trainer (``python -m compsde.distributed.train``).

All flags belong to the trainer's own parser (one definition, shown by ``compsde train -h``);
this command only forwards them, so ``torchrun --nproc-per-node N $(which compsde) train ...``
and ``torchrun --nproc-per-node N -m compsde.distributed.train ...`` behave the same.
"""

from __future__ import annotations

import click


@click.command("train", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train_command(args: tuple[str, ...]) -> None:
    """Train a real model with DSGD, DCSGD or DSignSGD (torchrun, or --simulate-agents N).

    Run 'compsde train -h' for the flags.
    """
    from ..distributed.train import main

    code = main(list(args))
    if code:
        # Not ctx.exit(code): run_cli calls click in non-standalone mode, where click returns
        # that code instead of raising it, and run_cli would report 0.
        raise SystemExit(code)
