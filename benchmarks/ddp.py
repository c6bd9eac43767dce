"""DDP communication hooks side by side: step time and bytes per rank, 2 gloo ranks.

Model: an MLP of ~1e7 parameters (784 → 2048 → 2048 → 2048 → 10) on random batches. Variants,
in one process group per network:

- ``local-sgd``: no communication at all (the compute floor);
- ``fp32-allreduce``: DDP without a hook; ``fp16-hook``: PyTorch's ``fp16_compress_hook``;
- ``powersgd-r1``: PyTorch's PowerSGD hook (rank 1, single bucket: it deadlocks on gloo with
  several, DESIGN.md);
- ``ours-dsgd``, ``ours-randk-1%`` (``dcsgd:randk:ratio=0.01``), ``ours-dsignsgd``.

The variants take turns step by step (after a barrier), so load from other processes on the
machine hits them alike; the table shows the median step time of each.

Networks: plain loopback, and a 1 Gbit/s link emulated by two network namespaces joined by a
veth pair with a ``tc tbf`` limit on both ends (created and removed by this script; skipped with
a message where that is not permitted). On the link, the bytes each rank really sent are read
from the veth's counters (headers included) beside the analytic count.

    python benchmarks/ddp.py [--steps 10] [--warmup 3] [--batch 4] [--out results/bench]

Prints a table and writes ``OUT/ddp.json``. Needs root for the namespaces. ``comm ms`` is the
step time above ``local-sgd``'s: what communication (encode, collective, decode) adds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("local-sgd", "fp32-allreduce", "fp16-hook", "powersgd-r1", "ours-dsgd",
            "ours-randk-1%", "ours-dsignsgd")
HIDDEN = "2048/2048/2048"
NS = [f"csde{os.getpid()}a", f"csde{os.getpid()}b"]
VETH = [f"csv{os.getpid() % 100000}a", f"csv{os.getpid() % 100000}b"]
ADDR = ["10.213.77.1/24", "10.213.77.2/24"]


# -- worker (one rank) ---------------------------------------------------------------------
def _powersgd_bytes(model, world: int) -> float:
    from compsde.distributed.wire import allreduce_bytes

    total = 0
    for p in model.parameters():
        if p.dim() > 1:
            n, m = p.shape[0], p[0].numel()
            compressed = (n + m) * 1 * 4
            total += compressed if compressed * 2 <= n * m * 4 else n * m * 4
        else:
            total += p.numel() * 4
    return allreduce_bytes(total, world)


def _counter(iface: str | None, kind: str) -> int | None:
    if not iface:
        return None
    path = Path(f"/sys/class/net/{iface}/statistics/{kind}_bytes")
    return int(path.read_text()) if path.exists() else None


def _build(variant: str, args: argparse.Namespace, world: int) -> dict:
    """One variant's model, optimizer, hook state and analytic bytes per step."""
    from torch import nn, optim
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

    from compsde.distributed import register
    from compsde.distributed.wire import allreduce_bytes
    from compsde.nn.models import count_parameters, make_model

    model = make_model(f"mlp:hidden={HIDDEN}", (1, 28, 28), 10, seed=0)
    d = count_parameters(model)
    net, state, analytic = model, None, 0.0
    if variant != "local-sgd":
        cap = 1000 if variant == "powersgd-r1" else 25
        net = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=cap,
                                                  gradient_as_bucket_view=args.bucket_view)
        analytic = allreduce_bytes(4 * d, world)
    if variant == "fp16-hook":
        net.register_comm_hook(None, default_hooks.fp16_compress_hook)
        analytic = allreduce_bytes(2 * d, world)
    elif variant == "powersgd-r1":
        net.register_comm_hook(psgd.PowerSGDState(None, matrix_approximation_rank=1,
                                                  start_powerSGD_iter=2), psgd.powerSGD_hook)
        analytic = _powersgd_bytes(model, world)
    elif variant.startswith("ours"):
        spec = {"ours-dsgd": "dsgd", "ours-randk-1%": "dcsgd:randk:ratio=0.01",
                "ours-dsignsgd": "dsignsgd"}[variant]
        state = register(net, spec, seed=0)
    return {"variant": variant, "d": d, "net": net, "state": state, "analytic": analytic,
            "opt": optim.SGD(model.parameters(), lr=1e-4), "times": [], "tx": 0, "rx": 0}


def worker(args: argparse.Namespace) -> None:
    """Interleave the variants step by step, so load from elsewhere hits them all alike."""
    import torch
    import torch.distributed as dist
    from torch import nn

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=args.init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
    iface = os.environ.get("GLOO_SOCKET_IFNAME") if args.measure else None
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 1, 28, 28, generator=gen)
    y = torch.randint(10, (args.batch,), generator=gen)
    runs = [_build(v, args, world) for v in args.variants]
    for step in range(args.warmup + args.steps):
        for run in runs:
            if step == args.warmup and run["state"] is not None:
                run["counted0"] = run["state"].bytes_sent
            dist.barrier()
            sent0, recv0 = _counter(iface, "tx"), _counter(iface, "rx")
            started = time.perf_counter()
            run["opt"].zero_grad(set_to_none=not args.bucket_view)
            nn.functional.cross_entropy(run["net"](x), y).backward()
            run["opt"].step()
            elapsed = time.perf_counter() - started
            if step >= args.warmup:
                run["times"].append(elapsed)
                if sent0 is not None:
                    run["tx"] += _counter(iface, "tx") - sent0
                    run["rx"] += _counter(iface, "rx") - recv0
    rows = []
    for run in runs:
        timed = sorted(run["times"])
        analytic = run["analytic"]
        if run["state"] is not None:
            analytic = (run["state"].bytes_sent - run["counted0"]) / args.steps
        rows.append({
            "variant": run["variant"], "parameters": run["d"],
            "step_ms_median": 1e3 * timed[len(timed) // 2],
            "step_ms_mean": 1e3 * sum(timed) / len(timed),
            "bytes_per_step_analytic": analytic,
            "bytes_per_step_measured_tx": run["tx"] / args.steps if iface else None,
            "bytes_per_step_measured_rx": run["rx"] / args.steps if iface else None,
        })
    if rank == 0:
        Path(args.result).write_text(json.dumps(rows))
    dist.barrier()
    dist.destroy_process_group()


# -- driver ---------------------------------------------------------------------------------
def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def setup_link(rate: str) -> str | None:
    """Create two namespaces joined by a rate-limited veth pair; None, or why not."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "ip or tc (iproute2) not installed"
    try:
        for ns in NS:
            _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1])
        for ns, veth, addr in zip(NS, VETH, ADDR, strict=True):
            _sh("ip", "link", "set", veth, "netns", ns)
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", veth)
            _sh("ip", "-n", ns, "link", "set", veth, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("tc", "-n", ns, "qdisc", "add", "dev", veth, "root", "tbf", "rate", rate,
                "burst", "512kb", "latency", "100ms")
    except (subprocess.CalledProcessError, OSError) as exc:
        teardown_link()
        detail = getattr(exc, "stderr", "") or str(exc)
        return f"could not create network namespaces ({detail.strip()})"
    return None


def teardown_link() -> None:
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def launch(args: argparse.Namespace, network: str, tmp: Path) -> list[dict]:
    init = f"file://{tmp / f'init-{network}-{time.monotonic_ns()}'}"
    result = tmp / f"{network}.json"
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", OMP_NUM_THREADS="1",
                   PYTHONWARNINGS="ignore")
        cmd = [sys.executable, __file__, "--worker", "--init", init, "--result", str(result),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch",
               str(args.batch), "--variants", *args.variants,
               "--bucket-view" if args.bucket_view else "--no-bucket-view"]
        if network == "link":
            env["GLOO_SOCKET_IFNAME"] = VETH[rank]
            cmd = ["ip", "netns", "exec", NS[rank], *cmd, "--measure"]
        else:
            env["GLOO_SOCKET_IFNAME"] = "lo"
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait(timeout=1800) for p in procs]
    if any(codes):
        raise RuntimeError(f"benchmark ranks failed on {network}: exit codes {codes}")
    return json.loads(result.read_text())


def table(rows: list[dict], network: str) -> str:
    base = {r["variant"]: r for r in rows}
    fp32 = base.get("fp32-allreduce")
    floor = base.get("local-sgd", {}).get("step_ms_median", 0.0)
    lines = [f"\n{network}: 2 ranks, {rows[0]['parameters']:,} parameters",
             f"{'variant':<16}{'step ms':>10}{'vs fp32':>9}{'vs fp16':>9}{'comm ms':>9}"
             f"{'bytes/step (analytic)':>24}{'measured tx':>14}{'bytes vs fp32':>15}"]
    for r in rows:
        ratio = r["step_ms_median"] / fp32["step_ms_median"] if fp32 else float("nan")
        f16 = base.get("fp16-hook")
        ratio16 = r["step_ms_median"] / f16["step_ms_median"] if f16 else float("nan")
        brat = (r["bytes_per_step_analytic"] / fp32["bytes_per_step_analytic"]
                if fp32 and fp32["bytes_per_step_analytic"] else float("nan"))
        tx = r["bytes_per_step_measured_tx"]
        lines.append(f"{r['variant']:<16}{r['step_ms_median']:>10.1f}{ratio:>9.3f}"
                     f"{ratio16:>9.3f}{r['step_ms_median'] - floor:>9.1f}"
                     f"{r['bytes_per_step_analytic']:>24,.0f}"
                     f"{'-' if tx is None else f'{tx:,.0f}':>14}{brat:>15.4f}")
    return "\n".join(lines)


def targets(results: dict[str, list[dict]]) -> list[str]:
    out = []
    for network, rows in results.items():
        r = {row["variant"]: row for row in rows}
        if {"ours-dsignsgd", "fp32-allreduce"} <= r.keys():
            b = r["ours-dsignsgd"]["bytes_per_step_analytic"] / r["fp32-allreduce"][
                "bytes_per_step_analytic"]
            out.append(f"{network}: DSignSGD bytes / fp32 allreduce = {b:.4f} "
                       f"(target <= 1/16 = 0.0625): {'PASS' if b <= 1 / 16 else 'FAIL'}")
        if network == "link" and {"ours-dsignsgd", "fp32-allreduce", "fp16-hook"} <= r.keys():
            s = r["ours-dsignsgd"]["step_ms_median"]
            a = s / r["fp32-allreduce"]["step_ms_median"]
            h = s / r["fp16-hook"]["step_ms_median"]
            out.append(f"link: DSignSGD step / fp32 = {a:.3f} (target <= 0.3): "
                       f"{'PASS' if a <= 0.3 else 'FAIL'}; / fp16 hook = {h:.3f} "
                       f"(target <= 0.6): {'PASS' if h <= 0.6 else 'FAIL'}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rate", default="1gbit", help="tc tbf rate of the emulated link")
    parser.add_argument("--bucket-view", action=argparse.BooleanOptionalAction, default=True,
                        help="DDP gradient_as_bucket_view for every variant (saves two copies)")
    parser.add_argument("--networks", nargs="+", default=["loopback", "link"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results: dict[str, list[dict]] = {}
    skipped = {}
    with tempfile.TemporaryDirectory(prefix="compsde-bench-") as tmp:
        for network in args.networks:
            if network == "link":
                why = setup_link(args.rate)
                if why:
                    skipped[network] = why
                    print(f"skipping the {args.rate}/s link: {why}", flush=True)
                    continue
                try:
                    results[network] = launch(args, network, Path(tmp))
                finally:
                    teardown_link()
            else:
                results[network] = launch(args, network, Path(tmp))
            print(table(results[network], network), flush=True)
    verdicts = targets(results)
    print("\n" + "\n".join(verdicts))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
               "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
               "rate": args.rate, "steps": args.steps, "batch": args.batch,
               "bucket_view": args.bucket_view,
               "results": results, "skipped": skipped, "targets": verdicts}
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from compsde.io import write_json

    print(f"wrote {write_json(out / 'ddp.json', payload)}")


if __name__ == "__main__":
    main()
