"""REPORT.md and ``compsde reproduce all``: a row per figure, errors and resumption."""

from __future__ import annotations

from pathlib import Path

import pytest

from compsde.cli import main
from compsde.cli.reproduce_cmd import reproduce_all
from compsde.experiments.cache import RunCache, run_sweep
from compsde.experiments.registry import Figure, FigureOutcome
from compsde.experiments.report import ReportRow, render, write_report


def test_render_table_links_and_escaping(tmp_path):
    rows = [
        ReportRow("fig1", "SDE | algorithm\nagree", "pass", png=str(tmp_path / "fig1.png"),
                  seconds=12.3, panels={"a": {"verdict": "pass", "detail": "gap 0.01"}}),
        ReportRow("fig2", "rules", "fail", png=str(tmp_path / "fig2.png"), seconds=250),
        ReportRow("fig3", "bounds", "error", note="RuntimeError: boom"),
        ReportRow("fig4", "sign rules", "pending"),
    ]
    text = render(rows, tmp_path, preset="quick", seed=0, command="compsde reproduce all",
                  total_seconds=300)
    assert "| fig1 | SDE \\| algorithm agree | pass | [fig1.png](fig1.png) | 12 s |" in text
    assert "| fig2 | rules | **FAIL** | [fig2.png](fig2.png) | 4.2 min |" in text
    assert "| fig3 | bounds | **ERROR** | – | – |" in text
    assert "| fig4 | sign rules | pending |" in text
    assert "1 of 4 figure(s) pass; 1 still pending; total runtime 5.0 min" in text
    assert "- a: pass — gap 0.01" in text and "RuntimeError: boom" in text
    path = write_report(tmp_path / "REPORT.md", rows, preset="quick", seed=0, command="x")
    assert path.read_text().startswith("# compsde")


def test_row_from_outcome_says_what_came_from_the_cache(tmp_path):
    outcome = FigureOutcome("fig2", "claim", {"a": {"verdict": "pass"}}, tmp_path / "f.png",
                            {"runs_cached": 18, "runs_computed": 0, "training_seconds": 600})
    outcome.seconds = 3.0
    row = ReportRow.from_outcome(outcome)
    text = render([row], tmp_path, preset="quick", seed=0, command="c")
    assert "| 3 s; 18 of 18 runs from the cache (10.0 min of training when computed) |" in text


def test_bad_status_names_parameter():
    with pytest.raises(ValueError, match="status"):
        ReportRow("fig1", "claim", "ok")


def _fake_figures(calls: list[str], fail: str | None = None) -> dict[str, Figure]:
    """Two tiny figures whose runs go through the real cache, and one that may raise."""

    def make(name: str) -> Figure:
        def runner(out: Path, preset: str, seed: int, progress: bool) -> FigureOutcome:
            if name == fail:
                raise RuntimeError(f"{name} broke")
            configs = [{"figure": name, "run": i, "preset": preset} for i in range(2)]

            def compute(config):
                calls.append(f"{name}/{config['run']}")
                return {"value": config["run"]}

            sweep = run_sweep(configs, compute, RunCache(out / "cache" / name))
            png = out / f"{name}.png"
            png.write_bytes(b"png")
            return FigureOutcome(name, f"claim of {name}",
                                 {"main": {"verdict": "pass", "detail": sweep.summary()}}, png)

        return Figure(name, f"claim of {name}", runner)

    return {n: make(n) for n in ("figA", "figB", "figC")}


def test_reproduce_all_writes_report_and_resumes(tmp_path):
    calls: list[str] = []
    rows = reproduce_all(_fake_figures(calls, fail="figB"), tmp_path, preset="quick", seed=0,
                         progress=False)
    assert [r.status for r in rows] == ["pass", "error", "pass"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "figB broke" in report and "[figA.png](figA.png)" in report
    assert calls == ["figA/0", "figA/1", "figC/0", "figC/1"]
    assert (tmp_path / "figA.json").is_file()

    # Started again: finished runs come from the cache, only the broken figure's work is new.
    calls.clear()
    rows = reproduce_all(_fake_figures(calls), tmp_path, preset="quick", seed=0,
                         progress=False)
    assert [r.status for r in rows] == ["pass", "pass", "pass"]
    assert calls == ["figB/0", "figB/1"]
    assert "0 run(s) computed, 2 loaded from the cache" in (tmp_path / "REPORT.md").read_text()


def test_cli_rejects_unknown_figure_and_distributed_elsewhere(capsys):
    assert main(["reproduce", "nope", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: figure must be one of all,") and len(err.splitlines()) == 1


def test_cli_reproduce_all_and_distributed_flag(tmp_path, monkeypatch, capsys):
    import compsde.cli.reproduce_cmd as cmd

    calls: list[str] = []
    figures = _fake_figures(calls)
    monkeypatch.setattr(cmd, "load_all", lambda: figures)
    assert main(["reproduce", "all", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "3 of 3 figure(s) pass" in text and "| figC | claim of figC | pass |" in text
    # --distributed only for figures whose runner takes it.
    assert main(["reproduce", "figA", "--distributed", "--out", str(tmp_path)]) == 2
    assert "distributed is available for figure" in capsys.readouterr().err
    # A failing figure makes the command exit 1 (and is in the report).
    monkeypatch.setattr(cmd, "load_all", lambda: _fake_figures(calls, fail="figA"))
    assert main(["reproduce", "all", "--out", str(tmp_path / "b"), "--no-progress"]) == 1
    assert "**ERROR**" in (tmp_path / "b" / "REPORT.md").read_text()


def test_distributed_option_reaches_runners_that_take_it(tmp_path):
    from compsde.cli.reproduce_cmd import run_figure

    seen = {}

    def runner(out, preset, seed, progress, distributed=False):
        seen["distributed"] = distributed
        png = out / "x.png"
        png.write_bytes(b"")
        return FigureOutcome("x", "c", {"p": {"verdict": "pass"}}, png)

    outcome = run_figure(Figure("x", "c", runner), tmp_path, preset="quick", seed=0,
                         progress=False, options={"distributed": True})
    assert seen == {"distributed": True} and outcome.seconds >= 0
    assert '"distributed": true' in (tmp_path / "x.json").read_text()


def test_full_preset_warns_without_gpu_for_network_figures(monkeypatch, capsys):
    import torch

    from compsde.cli.reproduce_cmd import warn_full_without_gpu

    def deep_runner(out, preset, seed, progress, distributed=False):
        raise AssertionError("not run")

    figures = {"figA": Figure("figA", "c", lambda out, preset, seed, progress: None),
               "figB": Figure("figB", "c", deep_runner)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    warn_full_without_gpu(["figA"], figures, "full")
    warn_full_without_gpu(["figB"], figures, "quick")
    assert capsys.readouterr().err == ""
    warn_full_without_gpu(["figA", "figB"], figures, "full")
    err = capsys.readouterr().err
    assert err.startswith("warning: --full trains paper-scale networks for figB")
    assert len(err.splitlines()) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    warn_full_without_gpu(["figB"], figures, "full")
    assert capsys.readouterr().err == ""


def test_cli_jobs_option(tmp_path, monkeypatch, capsys):
    import compsde.cli.reproduce_cmd as cmd

    calls: list[str] = []
    figures = _fake_figures(calls)
    seen = {}

    def parallel_runner(out, preset, seed, progress, jobs=1):
        seen["jobs"] = jobs
        png = out / "figD.png"
        png.write_bytes(b"png")
        return FigureOutcome("figD", "c", {"p": {"verdict": "pass"}}, png)

    figures["figD"] = Figure("figD", "claim of figD", parallel_runner)
    monkeypatch.setattr(cmd, "load_all", lambda: figures)
    assert main(["reproduce", "figD", "--jobs", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --jobs") and len(err.splitlines()) == 1
    assert main(["reproduce", "figA", "--jobs", "2", "--out", str(tmp_path)]) == 2
    assert "jobs is available for figure figD, got 'figA'" in capsys.readouterr().err
    assert main(["reproduce", "figD", "--jobs", "2", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert seen == {"jobs": 2} and '"jobs": 2' in (tmp_path / "figD.json").read_text()
    # `all` passes jobs only to the figures that take it.
    assert main(["reproduce", "all", "--jobs", "3", "--out", str(tmp_path / "all"),
                 "--no-progress"]) == 0
    assert seen == {"jobs": 3} and "4 of 4 figure(s) pass" in (tmp_path / "all" /
                                                               "REPORT.md").read_text()
