"""FSDP2 and HSDP on a two-level network: nodes of S ranks on fast links, 1 Gbit/s between nodes.

Model: an MLP (784 → HIDDEN → 10) on random batches, every block ``fully_shard``-ed. Variants,
interleaved step by step in one process group (after a barrier each, so load from elsewhere
hits them alike):

- ``local-sgd``: no communication (the compute floor);
- ``fsdp-fp32``, ``fsdp-dsignsgd``: a 1-D mesh over all R·S ranks (FSDP's fp32 reduce-scatter,
  or our sign reduce-scatter); its parameter all-gathers cross the slow links too;
- ``hsdp-fp32``: an (R, S) mesh, FSDP's own HSDP (fp32 reduce-scatter in the node, fp32
  all-reduce across nodes); ``hsdp-dsignsgd``, ``hsdp-randk-1%``: the same mesh with the method
  on the all-reduce across nodes (``compsde.distributed.hsdp``).

Network (``_links.setup_two_level``): a namespace per rank on its node's bridge (``--intra``,
default unthrottled), each node's bridge joined to a core bridge by an uplink limited to
``--rate`` (1 Gbit/s) both ways. Rank r is on node r // S, the rows of the (R, S) mesh. The
bytes each node really sent to the others are read from its uplink's counter between steps
(rank 0, outside the timed step; less the barriers' bytes, those of ``local-sgd``), beside
the analytic count of the HSDP rows: S ranks × the
replica dimension's bytes (the hooks' counters for ours, a ring all-reduce of the shard for
fp32). ``link-dilated`` is the time-dilated run of ``benchmarks/ddp.py`` (a core per rank
emulated on C cores: quotas of C/N of a core, every link at C/N of its rate, wall times / K).

    python benchmarks/hsdp.py [--mesh 2x2 4x2] [--steps 10] [--warmup 3] [--batch 4]
                              [--hidden 1024/1024/1024] [--networks link link-dilated]
                              [--out results/bench]

Prints a table per network and mesh and the targets, writes ``OUT/hsdp.json``. Needs root.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _links

VARIANTS = ("local-sgd", "fsdp-fp32", "fsdp-dsignsgd", "hsdp-fp32", "hsdp-dsignsgd",
            "hsdp-randk-1%")
METHODS = {"fsdp-dsignsgd": "dsignsgd", "hsdp-dsignsgd": "dsignsgd",
           "hsdp-randk-1%": "dcsgd:randk:ratio=0.01"}
NETWORKS = ("link", "link-dilated")
SMALL_BYTES = 100_000     # below this per node and step, headers and ACKs are a few per cent


# -- worker (one rank) ---------------------------------------------------------------------
def _build(variant: str, args: argparse.Namespace, mesh_shape: tuple[int, int]) -> dict:
    from torch import optim
    from torch.distributed.device_mesh import init_device_mesh

    from compsde.distributed import register
    from compsde.distributed.fsdp import shard_blocks
    from compsde.distributed.wire import allreduce_bytes
    from compsde.nn.models import count_parameters, make_model

    replicas, shards = mesh_shape
    model = make_model(f"mlp:hidden={args.hidden}", (1, 28, 28), 10, seed=0)
    d = count_parameters(model)
    net, state, analytic = model, None, None
    if variant.startswith("fsdp"):
        net = shard_blocks(model, init_device_mesh("cpu", (replicas * shards,)))
    elif variant.startswith("hsdp"):
        mesh = init_device_mesh("cpu", mesh_shape, mesh_dim_names=("replicate", "shard"))
        net = shard_blocks(model, mesh)
        shard = sum(-(-p.shape[0] // shards) * p[0].numel() for p in model.parameters())
        analytic = shards * allreduce_bytes(4 * shard, replicas)
    if variant in METHODS:
        state = register(net, METHODS[variant], seed=0)
    return {"variant": variant, "d": d, "net": net, "state": state, "analytic": analytic,
            "opt": optim.SGD(model.parameters(), lr=1e-4), "times": [], "uplink": 0.0}


def _uplinks(nodes: int, measure: bool) -> list[int] | None:
    return _links.uplink_tx_bytes(nodes) if measure else None


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    replicas, shards = args.mesh_shape
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=args.init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 1, 28, 28, generator=gen)
    y = torch.randint(10, (args.batch,), generator=gen)
    runs = [_build(v, args, (replicas, shards)) for v in args.variants]
    measure = args.measure and rank == 0
    for step in range(args.warmup + args.steps):
        for run in runs:
            if step == args.warmup and run["state"] is not None:
                run["counted0"] = run["state"].bytes_sent
            before = _uplinks(replicas, measure)
            dist.barrier()
            started = time.perf_counter()
            run["opt"].zero_grad(set_to_none=True)
            nn.functional.cross_entropy(run["net"](x), y).backward()
            run["opt"].step()
            elapsed = time.perf_counter() - started
            dist.barrier()                          # every rank's traffic of the step is done
            after = _uplinks(replicas, measure)
            if step >= args.warmup:
                run["times"].append(elapsed)
                if after is not None:
                    run["uplink"] += sum(a - b for a, b in zip(after, before, strict=True))
    floor = next((r["uplink"] for r in runs if r["variant"] == "local-sgd"), 0.0)
    rows = []
    for run in runs:
        timed = sorted(run["times"])
        step_ms = torch.tensor(1e3 * timed[len(timed) // 2], dtype=torch.float64)
        dist.all_reduce(step_ms, op=dist.ReduceOp.MAX)     # a synchronous step: the slowest
        counted = None
        if run["state"] is not None and run["variant"].startswith("hsdp"):
            counted = shards * (run["state"].bytes_sent - run["counted0"]) / args.steps
        rows.append({
            "mesh": f"{replicas}x{shards}", "variant": run["variant"], "parameters": run["d"],
            "step_ms_median": float(step_ms),
            "internode_bytes_per_node_step_analytic": counted if counted is not None
            else run["analytic"],
            "internode_bytes_per_node_step_measured": (run["uplink"] - floor) / args.steps
            / replicas if measure else None,
        })
    if rank == 0:
        Path(args.result).write_text(json.dumps(rows))
    dist.barrier()
    dist.destroy_process_group()


# -- driver ---------------------------------------------------------------------------------
def launch(args: argparse.Namespace, network: str, mesh_shape: tuple[int, int], tmp: Path,
           quotas: bool) -> list[dict]:
    replicas, shards = mesh_shape
    world = replicas * shards
    init = f"file://{tmp / f'init-{network}-{time.monotonic_ns()}'}"
    result = tmp / f"{network}-{replicas}x{shards}.json"
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), OMP_NUM_THREADS="1",
                   PYTHONWARNINGS="ignore", GLOO_SOCKET_IFNAME=_links.veth(rank, "a"))
        cmd = [sys.executable, __file__, "--worker", "--init", init, "--result", str(result),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch",
               str(args.batch), "--hidden", args.hidden, "--mesh", f"{replicas}x{shards}",
               "--variants", *args.variants, "--measure"]
        cmd = ["ip", "netns", "exec", _links.namespace(rank), *cmd]
        if quotas:
            cmd = ["sh", "-c", f'echo $$ > {_links.quota_procs(rank)} && exec "$@"', "sh",
                   *cmd]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait(timeout=3600) for p in procs]
    if any(codes):
        raise RuntimeError(f"benchmark ranks failed on {network}: exit codes {codes}")
    return json.loads(result.read_text())


def run_network(args: argparse.Namespace, network: str, mesh_shape: tuple[int, int],
                tmp: Path, rate: float, intra: float | None
                ) -> tuple[list[dict] | None, str | None]:
    """One mesh on the two-level network (dilated for ``link-dilated``): rows, or why not."""
    from ddp import dilation

    world = mesh_shape[0] * mesh_shape[1]
    factor = dilation(world, args.cores) if network == "link-dilated" else 1.0

    def setup() -> str | None:
        return _links.setup_two_level(mesh_shape[0], mesh_shape[1], 8 * rate / factor,
                                      None if intra is None else 8 * intra / factor,
                                      queue_ms=100 * factor)

    rows, why = _links.run_emulated(world, factor, setup,
                                    lambda quotas: launch(args, network, mesh_shape, tmp, quotas))
    for row in rows or []:
        row["time_dilation"] = factor
        row["step_ms_median"] /= factor
    return rows, why


def table(rows: list[dict], network: str) -> str:
    by = {r["variant"]: r for r in rows}
    hsdp32 = by.get("hsdp-fp32", {})
    lines = [f"\n{network}: mesh {rows[0]['mesh']} (R nodes x S ranks), "
             f"{rows[0]['parameters']:,} parameters",
             f"{'variant':<16}{'step ms':>10}{'vs hsdp-fp32':>14}{'inter-node B/node/step':>24}"
             f"{'analytic':>14}{'measured/analytic':>19}{'vs hsdp-fp32 bytes':>20}"]
    for r in rows:
        ratio = r["step_ms_median"] / hsdp32["step_ms_median"] if hsdp32 else float("nan")
        meas, ana = (r["internode_bytes_per_node_step_measured"],
                     r["internode_bytes_per_node_step_analytic"])
        base = hsdp32.get("internode_bytes_per_node_step_measured")
        lines.append(f"{r['variant']:<16}{r['step_ms_median']:>10.1f}{ratio:>14.3f}"
                     f"{'-' if meas is None else f'{meas:,.0f}':>24}"
                     f"{'-' if ana is None else f'{ana:,.0f}':>14}"
                     f"{meas / ana if meas and ana else float('nan'):>19.4f}"
                     f"{meas / base if meas is not None and base else float('nan'):>20.4f}")
    return "\n".join(lines)


def targets(results: dict[str, list[dict]]) -> list[str]:
    """The targets at R x S = 4 x 2 (each judged on its own quantity) and the byte counts."""
    out = []
    for name, rows in results.items():
        r = {row["variant"]: row for row in rows}
        for variant in ("hsdp-fp32", "hsdp-dsignsgd", "hsdp-randk-1%"):
            row = r.get(variant)
            if row and row["internode_bytes_per_node_step_measured"] is not None:
                analytic = row["internode_bytes_per_node_step_analytic"]
                dev = row["internode_bytes_per_node_step_measured"] / analytic - 1
                judged = (f"target within 3 %: {'PASS' if abs(dev) <= 0.03 else 'FAIL'}"
                          if analytic >= SMALL_BYTES else "small messages: TCP/IP headers "
                          "not negligible, not judged")
                out.append(f"{name}: {variant} inter-node bytes measured vs analytic = "
                           f"{dev:+.2%} ({judged})")
        if not name.endswith("@4x2") or not {"hsdp-fp32", "hsdp-dsignsgd",
                                             "fsdp-dsignsgd"} <= r.keys():
            continue
        sign, fp32, flat = r["hsdp-dsignsgd"], r["hsdp-fp32"], r["fsdp-dsignsgd"]
        b = (sign["internode_bytes_per_node_step_measured"]
             / fp32["internode_bytes_per_node_step_measured"])
        out.append(f"{name}: HSDP DSignSGD inter-node bytes / HSDP fp32 = {b:.4f} (target "
                   f"<= 1/16): {'PASS' if b <= 1 / 16 else 'FAIL'}")
        s = sign["step_ms_median"] / fp32["step_ms_median"]
        out.append(f"{name}: HSDP DSignSGD step / HSDP fp32 = {s:.3f} (target <= 0.5): "
                   f"{'PASS' if s <= 0.5 else 'FAIL'}")
        f = sign["step_ms_median"] / flat["step_ms_median"]
        out.append(f"{name}: HSDP DSignSGD step / FSDP2 DSignSGD = {f:.3f} (target <= 1): "
                   f"{'PASS' if f <= 1 else 'FAIL'}")
    return out


def _mesh(text: str) -> tuple[int, int]:
    try:
        replicas, shards = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mesh must be RxS (e.g. 4x2), got {text!r}") \
            from None
    if replicas < 2 or shards < 1:
        raise argparse.ArgumentTypeError(f"--mesh needs R >= 2 nodes and S >= 1, got {text!r}")
    return replicas, shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh", type=_mesh, nargs="+", default=[(2, 2), (4, 2)])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", default="1024/1024/1024", help="the MLP's hidden widths")
    parser.add_argument("--rate", default="1gbit", help="rate of every node's uplink")
    parser.add_argument("--intra", default=None,
                        help="rate of every rank's link to its node (default: unthrottled)")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)),
                        help="cores the ranks share (link-dilated: K = N / cores)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.mesh_shape = args.mesh[0]
        worker(args)
        return
    if args.cores < 1:
        parser.error(f"--cores must be at least 1, got {args.cores}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from compsde.advise.network import parse_bandwidth
    from compsde.io import write_json

    rate = parse_bandwidth(args.rate)
    intra = None if args.intra is None else parse_bandwidth(args.intra)
    results: dict[str, list[dict]] = {}
    skipped = {}
    with tempfile.TemporaryDirectory(prefix="compsde-bench-") as tmp:
        for shape in args.mesh:
            for network in args.networks:
                name = f"{network}@{shape[0]}x{shape[1]}"
                rows, why = run_network(args, network, shape, Path(tmp), rate, intra)
                if why:
                    skipped[name] = why
                    print(f"skipping {name}: {why}", flush=True)
                    continue
                results[name] = rows
                print(table(rows, network), flush=True)
    verdicts = targets(results)
    print("\n" + "\n".join(verdicts))
    payload = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
               "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
               "cores": args.cores, "rate": args.rate, "intra": args.intra,
               "steps": args.steps, "batch": args.batch, "hidden": args.hidden,
               "results": results, "skipped": skipped, "targets": verdicts}
    print(f"wrote {write_json(Path(args.out) / 'hsdp.json', payload)}")


if __name__ == "__main__":
    main()
