"""Emulated networks for benchmarks/ddp.py: N network namespaces on a bridge with rate-limited
links, and the CPU quotas of a time-dilated run.

Time dilation (the technique of time-warped network emulation): with N ranks on C < N cores,
each rank gets about C/N of a core, so a step is CPU-bound in a way a cluster with a core per
rank is not. Capping every rank at exactly C/N of a core (a CFS quota in a cgroup of its own)
and running every link at C/N of its rate makes every part of a step, computation and
transfer, take K = N/C times as long as on N cores with full-rate links; wall times divided
by K are then those of that machine. Needs root (namespaces, ``tc``, cgroups).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# the driver's pid names its namespaces; its ranks inherit it to find them (uplink counters)
LINKS_ID = int(os.environ.setdefault("COMPSDE_LINKS_ID", str(os.getpid())))
HUB = f"csde{LINKS_ID}h"
QUOTA_PERIOD_US = 4000      # short CFS periods (a throttled rank waits less than one for its
                            # share), long enough for the kernel's 1 ms minimum quota


def namespace(rank: int) -> str:
    return f"csde{LINKS_ID}r{rank}"


def veth(rank: int, side: str) -> str:
    return f"cv{LINKS_ID % 100000}{side}{rank}"


def address(rank: int) -> str:
    return f"10.213.77.{rank + 1}/24"


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def setup_link(world: int, rate_bits: float, queue_ms: float = 100.0) -> str | None:
    """N namespaces, each joined to a bridge in a hub namespace by a veth pair limited to
    ``rate_bits`` bit/s in both directions (``tc tbf``, a queue of ``queue_ms``); None, or
    why not."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "ip or tc (iproute2) not installed"
    rate = f"{int(rate_bits)}bit"
    try:
        _sh("ip", "netns", "add", HUB)
        _sh("ip", "-n", HUB, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", HUB, "link", "set", "br0", "up")
        for rank in range(world):
            ns, inner, outer = namespace(rank), veth(rank, "a"), veth(rank, "b")
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            _sh("ip", "link", "set", inner, "netns", ns)
            _sh("ip", "link", "set", outer, "netns", HUB)
            _sh("ip", "-n", HUB, "link", "set", outer, "master", "br0")
            _sh("ip", "-n", HUB, "link", "set", outer, "up")
            _sh("ip", "-n", ns, "addr", "add", address(rank), "dev", inner)
            _sh("ip", "-n", ns, "link", "set", inner, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            for where, dev in ((ns, inner), (HUB, outer)):
                _sh("tc", "-n", where, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                    "burst", "512kb", "latency", f"{queue_ms:g}ms")
    except (subprocess.CalledProcessError, OSError) as exc:
        teardown_link(world)
        detail = getattr(exc, "stderr", "") or str(exc)
        return f"could not create network namespaces ({detail.strip()})"
    return None


def teardown_link(world: int) -> None:
    for ns in [namespace(rank) for rank in range(world)] + [HUB]:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# -- CPU quotas -----------------------------------------------------------------------------
def _cpu_root() -> tuple[Path, str] | None:
    """The cgroup folder that holds CPU quotas, and its kind (v1 ``cfs`` or v2 ``max``)."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, "cfs"
    v2 = Path("/sys/fs/cgroup")
    controllers = v2 / "cgroup.subtree_control"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return v2, "max"
    return None


def quota_group(rank: int) -> str:
    return f"csde{LINKS_ID}q{rank}"


def setup_quotas(world: int, cores: float) -> str | None:
    """A cgroup per rank capped at ``cores`` of a CPU; None, or why not."""
    found = _cpu_root()
    if found is None:
        return "no cgroup CPU controller (cpu.cfs_quota_us or cpu.max) found"
    root, kind = found
    period = max(QUOTA_PERIOD_US, math.ceil(1000 / cores))
    quota = round(period * cores)
    try:
        for rank in range(world):
            group = root / quota_group(rank)
            group.mkdir(exist_ok=True)
            if kind == "cfs":
                (group / "cpu.cfs_period_us").write_text(str(period))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (group / "cpu.max").write_text(f"{quota} {period}")
    except OSError as exc:
        teardown_quotas(world)
        return f"could not create CPU quotas ({exc})"
    return None


def quota_procs(rank: int) -> str:
    """The file a process writes its PID to, to enter rank ``rank``'s quota."""
    found = _cpu_root()
    assert found is not None, "setup_quotas first"
    return str(found[0] / quota_group(rank) / "cgroup.procs")


def teardown_quotas(world: int) -> None:
    found = _cpu_root()
    if found is None:
        return
    for rank in range(world):
        group = found[0] / quota_group(rank)
        if group.exists():
            try:
                group.rmdir()
            except OSError:
                pass


# -- two-level network (nodes of S ranks, HSDP) ----------------------------------------------
def uplink(node: int, side: str) -> str:
    """The veth pair joining node ``node``'s bridge to the core bridge (``n``: node side)."""
    return f"cu{LINKS_ID % 100000}{side}{node}"


def setup_two_level(nodes: int, per_node: int, inter_bits: float, intra_bits: float | None,
                    queue_ms: float = 100.0) -> str | None:
    """``nodes`` nodes of ``per_node`` ranks: each rank's namespace joins its node's bridge by
    a veth (``intra_bits`` bit/s, None: unthrottled), each node bridge joins a core bridge by
    an uplink limited to ``inter_bits`` bit/s in both directions (all bridges in the hub
    namespace). Rank ``r`` is on node ``r // per_node``, as the rows of an (R, S) mesh.
    None, or why not."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "ip or tc (iproute2) not installed"

    def tbf(where: str, dev: str, bits: float) -> None:
        _sh("tc", "-n", where, "qdisc", "add", "dev", dev, "root", "tbf", "rate",
            f"{int(bits)}bit", "burst", "512kb", "latency", f"{queue_ms:g}ms")

    try:
        _sh("ip", "netns", "add", HUB)
        for bridge in ["core", *(f"n{node}" for node in range(nodes))]:
            _sh("ip", "-n", HUB, "link", "add", bridge, "type", "bridge")
            _sh("ip", "-n", HUB, "link", "set", bridge, "up")
        for node in range(nodes):
            near, far = uplink(node, "n"), uplink(node, "c")
            _sh("ip", "-n", HUB, "link", "add", near, "type", "veth", "peer", "name", far)
            _sh("ip", "-n", HUB, "link", "set", near, "master", f"n{node}")
            _sh("ip", "-n", HUB, "link", "set", far, "master", "core")
            for dev in (near, far):
                _sh("ip", "-n", HUB, "link", "set", dev, "up")
                tbf(HUB, dev, inter_bits)
        for rank in range(nodes * per_node):
            ns, inner, outer = namespace(rank), veth(rank, "a"), veth(rank, "b")
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            _sh("ip", "link", "set", inner, "netns", ns)
            _sh("ip", "link", "set", outer, "netns", HUB)
            _sh("ip", "-n", HUB, "link", "set", outer, "master", f"n{rank // per_node}")
            _sh("ip", "-n", HUB, "link", "set", outer, "up")
            _sh("ip", "-n", ns, "addr", "add", address(rank), "dev", inner)
            _sh("ip", "-n", ns, "link", "set", inner, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            if intra_bits is not None:
                for where, dev in ((ns, inner), (HUB, outer)):
                    tbf(where, dev, intra_bits)
    except (subprocess.CalledProcessError, OSError) as exc:
        teardown_link(nodes * per_node)
        detail = getattr(exc, "stderr", "") or str(exc)
        return f"could not create network namespaces ({detail.strip()})"
    return None


def uplink_tx_bytes(nodes: int) -> list[int]:
    """Bytes each node has sent over its uplink so far (the node side's tx counter)."""
    out = []
    for node in range(nodes):
        text = subprocess.run(["ip", "netns", "exec", HUB, "cat",
                               f"/sys/class/net/{uplink(node, 'n')}/statistics/tx_bytes"],
                              check=True, capture_output=True, text=True).stdout
        out.append(int(text.strip()))
    return out


def run_emulated(world: int, factor: float, setup: Callable[[], str | None],
                 run: Callable[[bool], T]) -> tuple[T | None, str | None]:
    """``setup()`` a network (None, or why not), add CPU quotas of ``1/factor`` of a core per
    rank when ``factor`` > 1 (a time-dilated run), ``run(quotas)``, and tear both down:
    ``(result, None)``, or ``(None, why not)``."""
    why = setup()
    if why:
        return None, why
    quotas = factor > 1
    try:
        if quotas:
            why = setup_quotas(world, 1 / factor)
            if why:
                return None, why
        return run(quotas), None
    finally:
        teardown_link(world)
        if quotas:
            teardown_quotas(world)
