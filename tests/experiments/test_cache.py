"""The run cache: stable keys, atomic entries, and resuming an interrupted sweep."""

from __future__ import annotations

import json

import pytest

from compsde.executors import TaskFailed
from compsde.experiments.cache import CacheWarning, RunCache, config_key, run_sweep


class Interrupted(Exception):
    pass


def test_key_is_stable_and_order_free():
    a = {"lr": 0.1, "batch": 16, "method": "dsgd", "nested": {"x": 1, "y": [1, 2]}}
    b = {"nested": {"y": [1, 2], "x": 1}, "method": "dsgd", "batch": 16, "lr": 0.1}
    assert config_key(a) == config_key(b)
    assert config_key(a) != config_key(a | {"lr": 0.10000001})
    assert config_key(a) != config_key(a, version="other-code")
    assert len(config_key(a)) == 20


@pytest.mark.parametrize("config", [{"lr": float("nan")}, {"f": object()}, [1, 2]])
def test_bad_configs_raise_value_error_naming_config(config):
    with pytest.raises(ValueError, match="config"):
        config_key(config)


def test_store_load_roundtrip_and_mismatch(tmp_path):
    cache = RunCache(tmp_path)
    config = {"lr": 0.5, "seed": 3}
    assert cache.load(config) is None
    path = cache.store(config, {"loss": [1.0, float("nan")], "final": 0.25})
    assert cache.load(config) == {"loss": [1.0, None], "final": 0.25}
    assert config in cache
    # No temp files left behind by the atomic write.
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    # A corrupted (half-written by another tool) or foreign entry counts as missing.
    path.write_text("{not json")
    with pytest.warns(CacheWarning, match="is not valid JSON"):
        assert cache.load(config) is None
    path.write_text(json.dumps({"version": cache.version, "config": {"lr": 9}, "result": {}}))
    with pytest.warns(CacheWarning, match="lacks digest"):
        assert cache.load(config) is None
    # Another code version does not see the entry.
    cache.store(config, {"final": 1.0})
    assert RunCache(tmp_path, version="v2").load(config) is None


def test_interrupted_sweep_resumes_without_recomputing(tmp_path):
    configs = [{"run": i, "lr": 0.1 * (i + 1)} for i in range(4)]
    calls: list[int] = []

    def compute(config):
        calls.append(config["run"])
        return {"final": config["lr"] ** 2}

    def stop_after_first(index, config, result, cached):
        if index == 0:
            raise Interrupted("simulated Ctrl-C after the first finished run")

    cache = RunCache(tmp_path / "cache")
    with pytest.raises(Interrupted):
        run_sweep(configs, compute, cache, on_done=stop_after_first)
    assert calls == [0]
    assert configs[0] in cache and configs[1] not in cache

    seen = []
    outcome = run_sweep(configs, compute, cache,
                        on_done=lambda i, c, r, cached: seen.append((i, cached)))
    assert calls == [0, 1, 2, 3]  # run 0 was not computed a second time
    assert outcome.loaded == [0] and outcome.computed == [1, 2, 3]
    assert seen == [(0, True), (1, False), (2, False), (3, False)]
    assert [r["final"] for r in outcome.results] == pytest.approx([0.01, 0.04, 0.09, 0.16])

    again = run_sweep(configs, compute, cache)
    assert calls == [0, 1, 2, 3] and again.loaded == [0, 1, 2, 3]
    assert "0 run(s) computed, 4 loaded" in again.summary()


def test_failing_run_keeps_earlier_runs(tmp_path):
    def compute(config):
        if config["run"] == 1:
            raise RuntimeError("boom")
        return {"ok": True}

    cache = RunCache(tmp_path)
    configs = [{"run": 0}, {"run": 1}]
    with pytest.raises(RuntimeError):
        run_sweep(configs, compute, cache)
    assert configs[0] in cache and configs[1] not in cache


def test_duplicate_configs_rejected(tmp_path):
    with pytest.raises(ValueError, match="configs"):
        run_sweep([{"a": 1}, {"a": 1}], lambda c: {}, RunCache(tmp_path))


def test_parallel_sweep_matches_serial_and_resumes(tmp_path):
    """jobs=2: two spawned workers; ``dict`` is the (picklable) compute: result = its config."""
    configs = [{"run": i, "lr": 0.1 * (i + 1)} for i in range(5)]
    cache = RunCache(tmp_path / "cache")
    stopped: list[int] = []

    def stop_after_two(index, config, result, cached):
        stopped.append(index)
        if len(stopped) == 2:
            raise Interrupted("simulated Ctrl-C after two finished runs")

    with pytest.raises(Interrupted):
        run_sweep(configs, dict, cache, on_done=stop_after_two, jobs=2)
    assert sum(c in cache for c in configs) >= 2  # every run that finished is stored
    finished = [i for i, c in enumerate(configs) if c in cache]

    seen: list[int] = []
    outcome = run_sweep(configs, dict, cache, jobs=2,
                        on_done=lambda i, c, r, cached: seen.append(i))
    assert outcome.loaded == finished and outcome.computed == sorted(set(range(5)) - set(finished))
    assert sorted(seen) == list(range(5))
    assert outcome.results == configs  # config order, whatever order the workers finished in
    serial = run_sweep(configs, dict, RunCache(tmp_path / "serial"))
    assert serial.results == outcome.results


def test_parallel_sweep_reports_a_failing_run(tmp_path):
    import operator

    cache = RunCache(tmp_path)
    configs = [{"run": 0, "result": {"x": 1}}, {"run": 1}]  # run 1 has no "result": KeyError
    with pytest.raises(TaskFailed, match=r"task 1 failed \(\{'run': 1\}\): KeyError") as info:
        run_sweep(configs, operator.itemgetter("result"), cache, jobs=2)
    assert info.value.item == {"run": 1} and "Traceback" in info.value.details
    assert configs[1] not in cache
    with pytest.raises(ValueError, match="jobs"):
        run_sweep(configs, dict, cache, jobs=0)


def test_the_key_depends_on_the_code(monkeypatch, tmp_path):
    """A run computed by other code never answers for this code (the key holds a source hash)."""
    from compsde.experiments import cache as cache_module

    config = {"method": "dsgd", "lr": 0.1}
    store = RunCache(tmp_path)
    store.store(config, {"level": 1.0})
    assert store.load(config) == {"level": 1.0}
    fingerprint = cache_module.code_fingerprint()
    assert fingerprint.split("+")[1] and len(fingerprint.split("+")[1]) == 16
    monkeypatch.setattr(cache_module, "code_fingerprint", lambda: "0.1.0+edited")
    assert RunCache(tmp_path).load(config) is None
    assert config_key(config) != store.key(config)


def test_code_fingerprint_hashes_the_package_source(monkeypatch, tmp_path):
    from compsde.experiments import cache as cache_module

    package = tmp_path / "compsde"
    (package / "experiments").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "experiments" / "cache.py").write_text("")
    monkeypatch.setattr(cache_module, "__file__", str(package / "experiments" / "cache.py"))
    cache_module.code_fingerprint.cache_clear()
    try:
        first = cache_module.code_fingerprint()
        (package / "a.py").write_text("x = 2\n")
        cache_module.code_fingerprint.cache_clear()
        assert cache_module.code_fingerprint() != first
    finally:
        cache_module.code_fingerprint.cache_clear()


def test_recomputing_misses_every_entry_and_refreshes_it(tmp_path):
    from compsde.experiments.cache import recomputing

    calls = []

    def compute(config):
        calls.append(config["i"])
        return {"value": config["i"] * 2}

    configs = [{"i": i} for i in range(3)]
    store = RunCache(tmp_path)
    run_sweep(configs, compute, store)
    run_sweep(configs, compute, store)
    assert calls == [0, 1, 2]
    with recomputing():
        again = run_sweep(configs, compute, store)
    assert calls == [0, 1, 2, 0, 1, 2] and again.computed == [0, 1, 2]
    assert store.load(configs[0]) == {"value": 0}


def test_reproduce_no_cache_recomputes_every_run(tmp_path, monkeypatch):
    """`compsde reproduce fig3 --no-cache` rewrites every cache entry instead of reading it."""
    from compsde.cli import main
    from compsde.experiments import fig3

    sizes = {"runs": 50, "steps": 300, "speed_runs": 20, "speed_steps": 300}
    fig3.run(tmp_path, sizes=sizes)
    entries = sorted((tmp_path / "cache" / "fig3").glob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in entries}
    fig3.run(tmp_path, sizes=sizes)
    assert {p: p.stat().st_mtime_ns for p in entries} == before      # served from the cache
    monkeypatch.setitem(fig3.PRESETS, "quick", fig3.PRESETS["quick"] | sizes)
    main(["reproduce", "fig3", "--no-cache", "--out", str(tmp_path), "--no-progress"])
    assert all(p.stat().st_mtime_ns != before[p] for p in entries)


def _tamper(path, change):
    entry = json.loads(path.read_text())
    change(entry)
    path.write_text(json.dumps(entry))


TAMPERED = {  # what a damaged entry holds, and the reason the warning gives
    "another result": (lambda e: e["result"].pop("steps"), "not the one stored"),
    "a result of another shape": (lambda e: e["result"].update(loss=[1.0]), "not the one stored"),
    "NaN": (lambda e: e["result"].update(final=float("nan")), "holds NaN"),
    "no result": (lambda e: e.pop("result"), "lacks result"),
    "another config": (lambda e: e.update(config={"lr": 1}), "another config"),
    "truncated": (None, "not valid JSON"),
}


@pytest.mark.parametrize("damage", sorted(TAMPERED))
def test_a_damaged_entry_is_recomputed_with_one_warning(damage, tmp_path):
    cache = RunCache(tmp_path)
    configs = [{"run": 0}, {"run": 1}]
    calls: list[int] = []

    def compute(config):
        calls.append(config["run"])
        return {"steps": [0, 1, 2], "loss": [3.0, 2.0, float(config["run"])], "final": 0.5}

    first = run_sweep(configs, compute, cache)
    change, reason = TAMPERED[damage]
    path = cache.path(configs[1])
    if change is None:
        path.write_text(path.read_text()[:40])
    else:
        _tamper(path, change)
    with pytest.warns(CacheWarning) as caught:
        again = run_sweep(configs, compute, cache)
    assert len(caught) == 1 and reason in str(caught[0].message)
    assert str(path) in str(caught[0].message) and "--no-cache" in str(caught[0].message)
    assert calls == [0, 1, 1] and again.loaded == [0] and again.computed == [1]
    assert again.results == first.results                  # recomputed, and stored again
    assert cache.stored(configs[1]) == first.results[1]


def test_an_entry_of_other_code_is_recomputed_silently(tmp_path):
    import warnings

    config = {"run": 0}
    RunCache(tmp_path, version="old-code").store(config, {"x": 1})
    path = RunCache(tmp_path, version="old-code").path(config)
    path.rename(RunCache(tmp_path).path(config))          # another version under this key
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert RunCache(tmp_path).load(config) is None
