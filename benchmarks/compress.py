"""Benchmark of the compressor hot paths on one 1-D float32 vector of 1.1e7 entries.

Side by side in one run, interleaved in rounds so machine noise hits every row alike, each round
in a new order (seeded): what ran just before a case changes what the caches hold (a case after
one that writes 44 MB of fresh memory measured up to 2x slower), so a fixed order favours some
rows:
- the floor: a plain copy ``y.copy_(x)`` into a preallocated tensor (and ``x.clone()``, a copy
  into fresh memory, for the rows that must return a new dense tensor);
- Rand-k (ratio 0.01): ``encode`` (draw the k indices + gather the values: the compression that
  is sent), ``decode`` into a preallocated tensor, and the dense ``__call__``;
- sign: ``encode`` (pack 1 bit per entry), ``decode`` into a preallocated tensor, both together,
  and ``decode`` into fresh memory;
- the DSignSGD wires of the DDP hook, one rank's work per bucket with the collectives left out:
  the bit all-gather at N = 2 (pack + mean of the 2 gathered rows) and the sign reduce-scatter
  at N = 8 (pack + count this rank's shard + unpack the 8 count planes into the mean).
Targets: Rand-k compression and sign encode+decode each ≤ 2× the plain copy, and ≤ 1.5× for
sign encode+decode on the AVX2 build. The sign rows run once per build in ``--builds`` (default
all three, side by side in the same interleaved rounds): ``native`` (the compiled kernels of
``compsde.compressors.native`` built for this CPU: its AVX-512 paths where it has them),
``avx2`` (the same build with ``-mno-avx512f``: its AVX2 paths, as on an AVX2-only CPU),
``bytes`` (``-mno-avx2``: the byte loops) and ``torch`` (the torch code they replace).
``--threads`` sets torch's intra-op threads (default 1: the hooks' one thread per rank, and a
single-threaded copy).

    python benchmarks/compress.py [--d 11000000] [--repeats 21] [--threads 1]
                                  [--builds native,avx2,torch]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from _common import print_table, save
from compsde.compressors import make, native


def _under(build: Callable[[], AbstractContextManager], fn: Callable[[], object]
           ) -> Callable[[], object]:
    """``fn`` run with the kernels of ``build`` selected."""
    def run() -> object:
        with build():
            return fn()
    return run


def shuffled_rounds(cases: dict[str, Callable[[], object]], repeats: int,
                    seed: int = 0) -> dict[str, float]:
    """Median seconds of each case over ``repeats`` rounds (after one warm-up round), each
    round running every case once in an order drawn from ``random.Random(seed)``."""
    order = list(cases)
    draw = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for rep in range(repeats + 1):
        draw.shuffle(order)
        for name in order:
            started = time.perf_counter()
            cases[name]()
            if rep:
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def _build_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    allowed = [*native.BUILDS, "torch"]
    bad = [name for name in names if name not in allowed]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"must be distinct names among {', '.join(allowed)}, comma-separated; got {text!r}")
    return names


def _wire_cases(x: torch.Tensor, out: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One rank's encode and decode of the DSignSGD wires on ``x`` (module docstring); the
    other ranks' messages come from independent gradients, so the counts spread as in a noisy
    step (messages that agree everywhere would make the decode tables look faster)."""
    from compsde.distributed.codecs import BucketKey
    from compsde.distributed.sign_codecs import SignBitsCodec, SignScatterCodec

    key = BucketKey(0, 0, 0, 0)
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(2)
    others = [torch.randn(x.numel(), generator=generator) for _ in range(7)]
    bits = SignBitsCodec(x.numel(), 2, x.dtype, cpu)
    gathered = torch.stack([bits.encode(g, key, False).clone() for g in (x, others[0])])
    scatter = SignScatterCodec(x.numel(), 8, x.dtype, cpu)
    sent = [scatter.encode(g, key, False).clone() for g in (x, *others)]
    received = torch.stack([rows[0] for rows in sent])               # this rank's shard 0
    planes = torch.stack([scatter.reduce(torch.stack([rows[r] for rows in sent])).clone()
                          for r in range(8)])

    def bits_round() -> None:
        bits.encode(x, key, False)
        bits.decode(gathered, key, out)

    def scatter_round() -> None:
        scatter.encode(x, key, False)
        scatter.reduce(received)
        scatter.decode(planes, key, out)

    return {"wire bits N=2 encode+decode (out=)": bits_round,
            "wire scatter N=8 encode+count+decode (out=)": scatter_round}


def _sign_cases(x: torch.Tensor, out: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The rows that run the sign kernels (one set per build)."""
    sign = make("sign")
    sign_message = sign.encode(x)
    return {"sign encode": lambda: sign.encode(x),
            "sign decode (out=)": lambda: sign.decode(sign_message, out=out),
            "sign encode+decode (out=)": lambda: sign.decode(sign.encode(x), out=out),
            "sign encode+decode (fresh)": lambda: sign.decode(sign.encode(x)),
            **_wire_cases(x, out)}


def _selector(build: str) -> Callable[[], AbstractContextManager]:
    return lambda: native.using(build)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=11_000_000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--builds", type=_build_names, default="native,avx2,torch",
                        help="comma-separated: native, avx2, bytes, torch")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    kernels: dict[str, dict] = {}
    for build in args.builds:
        with native.using(build) as status:
            kernels[build] = status
        if build != "torch" and not status["available"]:
            parser.error(f"--builds {build}: no compiled kernels ({status['reason']})")

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.d, generator=generator)
    y = torch.empty_like(x)
    out = torch.empty_like(x)
    randk = make("randk:ratio=0.01")
    randk_message = randk.encode(x, torch.Generator().manual_seed(1))

    cases: dict[str, Callable[[], object]] = {
        "copy (preallocated)": lambda: y.copy_(x),
        "clone (fresh memory)": lambda: x.clone(),
        "randk encode": lambda: randk.encode(x, torch.Generator().manual_seed(1)),
        "randk decode (out=)": lambda: randk.decode(randk_message,
                                                    torch.Generator().manual_seed(1), out=out),
        "randk __call__ (fresh)": lambda: randk(x, generator),
    }
    floor = list(cases)
    signs: list[str] = []
    for build in args.builds:
        with native.using(build):
            built = _sign_cases(x, out)
        signs = list(built)
        cases.update({f"{name} [{build}]": _under(_selector(build), fn)
                      for name, fn in built.items()})
    times = shuffled_rounds(cases, args.repeats)
    copy = times["copy (preallocated)"]
    ratios = {name: t / copy for name, t in times.items()}
    print(f"d = {args.d:,} float32, median of {args.repeats} rounds in shuffled order, "
          f"{torch.get_num_threads()} threads")
    for build, status in kernels.items():
        print(f"  build {build}: {status['reason']}; avx512 {status['avx512']}, "
              f"avx2 {status['avx2']}")
    print_table(["case", "ms", "× copy"],
                [[name, f"{times[name] * 1e3:.2f}", f"{ratios[name]:.2f}"] for name in floor])
    print()
    header = ["case"] + [f"{column} [{build}]" for build in args.builds
                         for column in ("ms", "× copy")]
    print_table(header, [[name] + [cell for build in args.builds
                                   for cell in (f"{times[f'{name} [{build}]'] * 1e3:.2f}",
                                                f"{ratios[f'{name} [{build}]']:.2f}")]
                         for name in signs])
    targets = {"randk encode": 2.0}
    for build in args.builds:
        for name in ("sign encode+decode (out=)", "wire bits N=2 encode+decode (out=)",
                     "wire scatter N=8 encode+count+decode (out=)"):
            targets[f"{name} [{build}]"] = 1.5 if build == "avx2" and name.startswith("sign") \
                else 2.0
    path = save("compress", {
        "command": "python benchmarks/compress.py --d {} --repeats {} --threads {} --builds {}"
                   .format(args.d, args.repeats, args.threads, ",".join(args.builds)),
        "threads": args.threads,
        "kernels": kernels,
        "d": args.d,
        "dtype": "float32",
        "repeats": args.repeats,
        "seconds": times,
        "ratio_to_copy": ratios,
        "targets": targets,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
