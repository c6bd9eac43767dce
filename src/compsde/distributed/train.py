"""``python -m compsde.distributed.train`` (also ``compsde train``): train a real model with
DSGD, DCSGD or DSignSGD (THEORY.md §2), or a method beyond the paper (§8, §8b: Signum, scaled
sign, EF21, EF-signSGD).

Launch with ``torchrun --nproc-per-node N -m compsde.distributed.train --model mlp --method
dsignsgd ...``: each rank trains on its shard of an offline data set (:mod:`compsde.nn.data`),
DDP + our hook (:func:`compsde.distributed.register`) averages the messages, plain SGD steps;
with ``--parallel fsdp`` every block is sharded with FSDP2's ``fully_shard`` and our
reduce-scatter leaves each rank its shard of the mean message (:mod:`.fsdp`); with ``--parallel
hsdp --replicas R`` the blocks are sharded within R nodes of S ranks and the method runs on the
all-reduce across the nodes only (:mod:`.hsdp`).
Without torchrun it runs as one rank (with a note), or ``--simulate-agents N`` runs N agents in
one process with the same algorithm and no collectives (:class:`AgentSimulator`).

Writes to ``--out``: ``result.json`` (config, per-step mean loss over ranks, test loss and
accuracy, bytes sent/received per rank vs fp32 allreduce, timings), ``loss.png`` and, every
``--checkpoint-every`` steps, ``checkpoint.pt`` (``--resume`` continues from it and reaches the
same parameters as an uninterrupted run: batches, noise and compressor randomness are pure
functions of ``(seed, step, rank)``).

Faults: ``--timeout`` is the process-group timeout; if a rank dies the others stop with a clear
error (exit 1) within it. Non-finite gradients raise an error naming the step (exit 1) or, with
``--on-nonfinite skip``, skip the step on every rank. User mistakes print one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import fields

from .config import PARALLEL, SIGN_WIRES, TrainConfig

EXIT_USAGE, EXIT_FAILED = 2, 1


class UsageError(ValueError):
    """A command-line mistake (printed as one line, exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (docs/DESIGN.md, "Errors")
        raise UsageError(message)


class _HelpFormatter(argparse.HelpFormatter):
    """Help in the look of the other subcommands: ``[default: X]`` only where there is one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is not None and default is not False and default != argparse.SUPPRESS
                and action.option_strings and "[default:" not in text):
            text += f"  [default: {default}]"
        return text


def _prog() -> str:
    """How the trainer was started, for its usage line: ``compsde train`` or the module."""
    if os.path.basename(sys.argv[0]).startswith("compsde"):
        return "compsde train"
    return "python -m compsde.distributed.train"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=_prog(), description=__doc__.split("\n\n")[0].replace("``", ""),
                formatter_class=_HelpFormatter)
    d = TrainConfig()
    p.add_argument("--model", default=d.model,
                   help="mlp[:hidden=256/128] | resnet[:depth=8|20|18,width=W,norm=batch|group]"
                        " | vit[:dim=64,depth=4,heads=4,patch=4] | gpt[:size=tiny|small|gpu]"
                        " (with --data text)")
    p.add_argument("--data", default=d.data,
                   help="fashion-mnist[:path=DIR] | digits | mnist-subset | cifar10:path=DIR | "
                        "synthetic[:n=2048,shape=1x28x28] | text[:path=FILE,tokens=word|char,"
                        "vocab=2000,context=32]")
    p.add_argument("--method", default=d.method,
                   help="dsgd | dsignsgd[:vote=majority] | dcsgd:<compressor> (randk:ratio=R, "
                        "bernoulli:p=P, qsgd:levels=S, natural) | signum:beta=B | scaledsign | "
                        "ef21:<compressor> (topk:ratio=R, scaledsign, or an unbiased one) | "
                        "ef-signsgd")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate η")
    p.add_argument("--batch", type=int, default=d.batch, help="per-rank batch B")
    p.add_argument("--steps", type=int, default=d.steps, help="total steps k")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the model, the batches, the noise and the compressors")
    p.add_argument("--noise", default=None,
                   help="inject gradient noise: gaussian:scale=S | student-t:nu=V,scale=S "
                        "(per rank: scale=1/2)")
    p.add_argument("--sign-wire", default=d.sign_wire, choices=list(SIGN_WIRES),
                   help="DSignSGD's wire: bit all-gather, uint8 allreduce, sign "
                        "reduce-scatter, or auto (fewest bytes for the world size)")
    p.add_argument("--parallel", default=d.parallel, choices=list(PARALLEL),
                   help="ddp: replicate the model, our DDP hook; fsdp: fully_shard every "
                        "block, our reduce-scatter; hsdp: shard within R nodes of S ranks, "
                        "the method on the all-reduce across nodes (needs --replicas R)")
    p.add_argument("--replicas", type=int, default=None, metavar="R",
                   help="with --parallel hsdp: R nodes (replica groups) of S = world/R ranks; "
                        "an agent of the theory is a node (N = R, batch S·B)")
    p.add_argument("--randomness", default=d.randomness, choices=["shared", "independent"],
                   help="Rand-k/Bernoulli coordinates shared by all ranks or per rank")
    p.add_argument("--on-nonfinite", default=d.on_nonfinite, choices=["raise", "skip"],
                   help="a non-finite gradient stops the run naming the step (raise), or the "
                        "step is skipped on every rank (skip)")
    p.add_argument("--simulate-agents", type=int, default=None, metavar="N",
                   help="N agents in one process, no collectives")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="K",
                   help="write OUT/checkpoint.pt every K steps (0: never)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--timeout", type=float, default=d.timeout,
                   help="process-group timeout in seconds")
    p.add_argument("--bucket-cap-mb", type=float, default=d.bucket_cap_mb,
                   help="DDP gradient bucket size in MB (one message per bucket and step)")
    p.add_argument("--log-every", type=int, default=d.log_every, metavar="K",
                   help="record the mean training loss every K steps")
    p.add_argument("--eval-every", type=int, default=d.eval_every, metavar="K",
                   help="evaluate on the test split every K steps (0: at the end only)")
    p.add_argument("--device", default=d.device, help="cpu | cuda (one GPU per rank)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per rank (default: cores / local ranks)")
    p.add_argument("--init-from", default=None, metavar="FILE",
                   help="start from these parameters (a torch.save'd state_dict of the same "
                        "--model) instead of the seed's initialisation")
    p.add_argument("--init-method", default=None,
                   help="rendezvous (default: env:// under torchrun, else a temp file)")
    p.add_argument("--out", default=d.out,
                   help="folder for result.json, loss.png and checkpoint.pt; checked before "
                        "training")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress on rank 0: a bar on a terminal, else a line every 10 s "
                        "(default: on)")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse and validate the flags into a :class:`TrainConfig` (ValueError on mistakes)."""
    namespace = build_parser().parse_args(argv)
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(namespace).items() if k in names}).validate()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def flag_message(message: str) -> str:
    """``simulate_agents must be …`` → ``--simulate-agents must be …`` (the flag as typed)."""
    match = re.match(r"^([a-z][a-z0-9_]*)(?=[\s'])", message)
    flags = {a.dest: a.option_strings[-1] for a in build_parser()._actions if a.option_strings}
    if match is None or match.group(1) not in flags:
        return message
    return flags[match.group(1)] + message[match.end():]


def main(argv: list[str] | None = None) -> int:
    """Run the trainer; returns the exit code (0 ok, 1 failed run, 2 user mistake)."""
    try:
        config = parse_args(argv)
        from ..compressors import native

        native.enabled()                            # COMPSDE_NATIVE, before any work
    except SystemExit as done:                      # --help
        return int(done.code or 0)
    except ValueError as exc:
        _say(f"error: {flag_message(str(exc).splitlines()[0])}")
        return EXIT_USAGE
    from .runner import RunFailed, run

    rank = os.environ.get("RANK", "0")
    try:
        summary = run(config)
    except RunFailed as exc:
        _say(f"error: rank {rank}: {exc}")
        return EXIT_FAILED
    except ValueError as exc:
        _say(f"error: {str(exc).splitlines()[0]}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("error: interrupted")
        return 130
    if summary.get("rank", 0) == 0:
        print(summary["message"], flush=True)
    return 0


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # an entry point: the trainer only writes PNGs
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code) if code == EXIT_FAILED else sys.exit(code)


__all__ = ["TrainConfig", "build_parser", "main", "parse_args"]
