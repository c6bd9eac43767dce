"""Executors: the same bits on every executor and chunk grouping; failures name their task.

The Ray tests start a local two-CPU cluster (``ray.init(num_cpus=2)``) once for the module;
one of them runs in the default suite, the rest are marked slow.
"""

from __future__ import annotations

import json
import operator
import sys

import numpy as np
import pytest
import torch

from compsde import chunks, executors, simulate
from compsde.cli import main
from compsde.executors import LocalExecutor, ProcessExecutor, TaskFailed
from compsde.experiments.cache import RunCache, run_sweep
from compsde.sde import simulate_sde


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.losses, b.losses)  # NaN (diverged) positions included
    torch.testing.assert_close(a.final_x.cpu(), b.final_x.cpu(), rtol=0, atol=0)


def test_specs_parse_and_bad_ones_name_the_allowed_values():
    assert isinstance(executors.make("local"), LocalExecutor)
    assert executors.make("processes:3").workers == 3
    assert executors.resolve(None, jobs=2).spec == "processes:2"
    assert executors.resolve("processes:2", jobs=2).spec == "processes:2"
    for bad in ("", "threads", "local:2", "processes", "processes:0", "processes:x"):
        with pytest.raises(ValueError, match="executor"):
            executors.make(bad)
    with pytest.raises(ValueError, match="jobs=2 is the shorthand"):
        executors.resolve("local", jobs=2)


def test_ray_missing_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'compsde\[ray\]'"):
        executors.make("ray:auto")
    assert main(["simulate", "--executor", "ray", "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --executor") and "compsde[ray]" in err and "\n" not in err


def test_chunk_layout_depends_on_the_problem_only():
    layout = chunks.chunk_layout(10, chunks.CHUNK_NUMBERS // 3)
    assert [(c.first, c.size) for c in layout] == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert [c.size for c in chunks.chunk_layout(2, 10**7)] == [1, 1]  # one run per chunk
    groups = chunks.task_groups(layout, workers=1, per_worker=2)
    assert [[c.index for c in g] for g in groups] == [[0, 1], [2, 3]]


def test_processes_give_the_same_bits_as_local(monkeypatch):
    """Seven seeded chunks on two worker processes, grouped into tasks, against one process."""
    monkeypatch.setattr(chunks, "CHUNK_NUMBERS", 3 * 2 * 4)   # 3 runs of 2 agents × d = 4
    kw = dict(lr=0.05, steps=40, agents=2, runs=20, seed=5, record_every=10)
    local = simulate("dcsgd:randk:k=1", "quadratic:d=4", "student-t:nu=3", **kw)
    spread = simulate("dcsgd:randk:k=1", "quadratic:d=4", "student-t:nu=3",
                      executor="processes:2", **kw)
    _same(local, spread)


@pytest.mark.slow
def test_processes_give_the_same_sde_bits_as_local(monkeypatch):
    monkeypatch.setattr(chunks, "CHUNK_NUMBERS", 3 * (2 * 4 + 1) * 4)
    kw = dict(lr=0.05, steps=40, agents=2, runs=20, seed=5, record_every=10,
              moments="monte-carlo", samples=4)
    _same(simulate_sde("dsignsgd", "quadratic:d=4", "gaussian", **kw),
          simulate_sde("dsignsgd", "quadratic:d=4", "gaussian", executor=ProcessExecutor(2),
                       **kw))


def test_a_failing_task_names_its_item_on_every_local_executor():
    items = [{"result": 1}, {"run": 7}]
    with pytest.raises(TaskFailed, match=r"task 1 failed \(\{'run': 7\}\): KeyError"):
        LocalExecutor().map(operator.itemgetter("result"), items)
    assert LocalExecutor().map(len, ["ab", "c"]) == [2, 1]


# -- Ray (a local cluster started here) -------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_simulate_matches_local_bitwise_and_sweeps_resume(ray_cluster, tmp_path,
                                                               monkeypatch):
    monkeypatch.setattr(chunks, "CHUNK_NUMBERS", 4 * 2 * 3)  # 4 runs per chunk: 5 chunks
    args = ["simulate", "--method", "dsignsgd", "--landscape", "quadratic:d=3,eig=0.5:2",
            "--agents", "2", "--steps", "30", "--runs", "20", "--seed", "3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--executor", "ray", "--out", str(tmp_path / "ray")]) == 0
    local = json.loads((tmp_path / "local" / "result.json").read_text())
    remote = json.loads((tmp_path / "ray" / "result.json").read_text())
    local.pop("seconds"), remote.pop("seconds")
    assert (local["config"].pop("executor"), remote["config"].pop("executor")) == ("local", "ray")
    assert remote == local

    # a sweep whose second run raises: reported with its config; finished runs stay cached
    cache = RunCache(tmp_path / "cache")
    configs = [{"run": 0, "result": {"x": 1}}, {"run": 1}, {"run": 2, "result": {"x": 3}}]
    with pytest.raises(TaskFailed, match=r"\{'run': 1\}.*KeyError"):
        run_sweep(configs, operator.itemgetter("result"), cache, executor="ray")
    assert configs[1] not in cache
    before = [i for i, c in enumerate(configs) if c in cache]
    repaired = operator.methodcaller("get", "result", {"x": -1})
    resumed = run_sweep(configs, repaired, cache, executor="ray")
    assert resumed.loaded == before and resumed.computed == sorted({0, 1, 2} - set(before))
    assert resumed.results == [{"x": 1}, {"x": -1}, {"x": 3}]
    again = run_sweep(configs, repaired, cache, executor="ray")
    assert again.computed == [] and again.results == resumed.results


@pytest.mark.slow
def test_ray_figure_sweep_fills_the_driver_cache_and_a_rerun_computes_nothing(ray_cluster,
                                                                               tmp_path):
    from compsde.experiments.deep import TrainSpec
    from compsde.experiments.deep_figure import local_compute

    specs = [TrainSpec(model="mlp", data="synthetic", method=m, lr=0.1, batch=8,
                       agents=2, steps=4, seed=s, eval_every=2, eval_size=64)
             for m in ("dsgd", "dsignsgd") for s in (0, 1)]
    configs = [s.config() for s in specs]
    cache = RunCache(tmp_path / "cache")
    sweep = run_sweep(configs, local_compute("cpu"), cache, executor="ray")
    assert sweep.computed == [0, 1, 2, 3] and all(c in cache for c in configs)
    rerun = run_sweep(configs, local_compute("cpu"), cache, executor="ray")
    assert rerun.computed == [] and rerun.results == sweep.results


@pytest.mark.slow
def test_ray_sde_matches_local_bitwise(ray_cluster, monkeypatch):
    monkeypatch.setattr(chunks, "CHUNK_NUMBERS", 3 * (2 * 4 + 1) * 3)
    kw = dict(lr=0.05, steps=30, agents=2, runs=10, seed=1, record_every=10,
              moments="monte-carlo", samples=4)
    _same(simulate_sde("dcsgd:qsgd:levels=2", "rosenbrock:d=3", "gaussian", **kw),
          simulate_sde("dcsgd:qsgd:levels=2", "rosenbrock:d=3", "gaussian", executor="ray",
                       **kw))


SLOW_TASK = '''
import os, time
from pathlib import Path


def task(folder):
    Path(folder, f"{os.getpid()}.pid").write_text("started")
    time.sleep(120)
'''

DRIVER = '''
import sys
import slow_task
from compsde.executors import ProcessExecutor

try:
    ProcessExecutor(2).map(slow_task.task, [sys.argv[1]] * 2)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
'''


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_to_the_driver_ends_its_worker_processes(name, code, tmp_path):
    import os
    import signal
    import subprocess
    import time

    (tmp_path / "slow_task.py").write_text(SLOW_TASK)
    started = tmp_path / "started"
    started.mkdir()
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(started)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
            assert driver.poll() is None, driver.communicate()
            time.sleep(0.2)
        workers = [int(p.stem) for p in started.iterdir()]
        assert len(workers) == 2
        begun = time.monotonic()
        driver.send_signal(getattr(signal, name))
        out, err = driver.communicate(timeout=30)   # not the 120 s the tasks would take
        assert time.monotonic() - begun < 30
    finally:
        driver.kill()
        left = [int(p.stem) for p in started.iterdir()]
        alive = [pid for pid in left if _running(pid)]
        for pid in alive:                           # a failing run leaves none behind either
            os.kill(pid, signal.SIGKILL)
    assert driver.returncode == code, err
    assert ("interrupted" in out) == (name == "SIGINT"), out
    assert not alive, alive                         # the workers are gone, not orphaned


def _running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    import os

    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False
