"""Benchmark of the compressor hot paths on one 1-D float32 vector of 1.1e7 entries.

Side by side in one run, interleaved round-robin so machine noise hits every row alike:
- the floor: a plain copy ``y.copy_(x)`` into a preallocated tensor (and ``x.clone()``, a copy
  into fresh memory, for the rows that must return a new dense tensor);
- Rand-k (ratio 0.01): ``encode`` (draw the k indices + gather the values: the compression that
  is sent), ``decode`` into a preallocated tensor, and the dense ``__call__``;
- sign: ``encode`` (pack 1 bit per entry), ``decode`` into a preallocated tensor, both together,
  and ``decode`` into fresh memory;
- the DSignSGD wires of the DDP hook, one rank's work per bucket with the collectives left out:
  the bit all-gather at N = 2 (pack + mean of the 2 gathered rows) and the sign reduce-scatter
  at N = 8 (pack + count this rank's shard + unpack the 8 count planes into the mean).
Targets: Rand-k compression and sign encode+decode each ≤ 2× the plain copy. The wires run
the compiled kernels of ``compsde.distributed.native`` when they are available (the output says
which path ran; ``COMPSDE_NATIVE=0`` forces the torch code). ``--threads`` sets torch's
intra-op threads (default 1: the hooks' one thread per rank, and a single-threaded copy).

    python benchmarks/compress.py [--d 11000000] [--repeats 21] [--threads 1]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from _common import interleaved, print_table, save
from compsde.compressors import make


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=11_000_000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    from compsde.compressors import native

    kernels = native.status()

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.d, generator=generator)
    y = torch.empty_like(x)
    out = torch.empty_like(x)
    randk, sign = make("randk:ratio=0.01"), make("sign")
    randk_message = randk.encode(x, torch.Generator().manual_seed(1))
    sign_message = sign.encode(x)

    cases: dict[str, Callable[[], object]] = {
        "copy (preallocated)": lambda: y.copy_(x),
        "clone (fresh memory)": lambda: x.clone(),
        "randk encode": lambda: randk.encode(x, torch.Generator().manual_seed(1)),
        "randk decode (out=)": lambda: randk.decode(randk_message,
                                                    torch.Generator().manual_seed(1), out=out),
        "randk __call__ (fresh)": lambda: randk(x, generator),
        "sign encode": lambda: sign.encode(x),
        "sign decode (out=)": lambda: sign.decode(sign_message, out=out),
        "sign encode+decode (out=)": lambda: sign.decode(sign.encode(x), out=out),
        "sign encode+decode (fresh)": lambda: sign.decode(sign.encode(x)),
    }
    cases.update(_wire_cases(x, out))
    times = interleaved(cases, args.repeats)
    copy = times["copy (preallocated)"]
    ratios = {name: t / copy for name, t in times.items()}
    print(f"d = {args.d:,} float32, median of {args.repeats} interleaved repeats, "
          f"{torch.get_num_threads()} threads; sign wire kernels: "
          f"{'compiled' if kernels['available'] else 'torch'} ({kernels['reason']})")
    print_table(["case", "ms", "× copy"],
                [[name, f"{times[name] * 1e3:.2f}", f"{ratios[name]:.2f}"] for name in cases])
    path = save("compress", {
        "command": "python benchmarks/compress.py "
                   f"--d {args.d} --repeats {args.repeats} --threads {args.threads}",
        "threads": args.threads,
        "kernels": kernels,
        "d": args.d,
        "dtype": "float32",
        "repeats": args.repeats,
        "seconds": times,
        "ratio_to_copy": ratios,
        "targets": {"randk encode": 2.0, "sign encode+decode (out=)": 2.0,
                    "wire bits N=2 encode+decode (out=)": 2.0,
                    "wire scatter N=8 encode+count+decode (out=)": 2.0},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
