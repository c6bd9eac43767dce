"""``reproduce``: a figure that trains several runs uses the free cores by default and says how
long it will take before it starts; figures without jobs are not told about them."""

from __future__ import annotations

from pathlib import Path

from compsde.cli import main
from compsde.cli.reproduce_cmd import available_cores
from compsde.experiments.registry import FIGURES, Figure, FigureOutcome, load_all


def _fake(seen: dict, with_jobs: bool):
    def run(out: Path, preset: str = "quick", seed: int = 0, progress: bool = False,
            **options) -> FigureOutcome:
        seen.update(options)
        png = Path(out) / "slow.png"
        png.write_bytes(b"")
        return FigureOutcome("slow", "a claim", {"a": {"verdict": "pass"}}, png)

    if with_jobs:
        def runner(out: Path, preset: str = "quick", seed: int = 0, progress: bool = False,
                   jobs: int = 1) -> FigureOutcome:
            return run(out, preset, seed, progress, jobs=jobs)
        return runner
    return run


def test_jobs_default_to_the_cores_and_the_time_is_announced(tmp_path, capsys, monkeypatch):
    load_all()
    seen: dict = {}
    monkeypatch.setitem(FIGURES, "slow", Figure("slow", "a claim", _fake(seen, True),
                                                quick_seconds=1200.0))
    assert main(["reproduce", "slow", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    cores = available_cores()
    assert seen.get("jobs", 1) == cores
    err = capsys.readouterr().err
    expected = round(1200 / cores / 60)
    assert f"note: slow --quick takes about {expected} min here with {cores} job(s)" in err


def test_typed_jobs_win_and_a_figure_without_jobs_still_refuses_them(tmp_path, capsys,
                                                                      monkeypatch):
    load_all()
    seen: dict = {}
    monkeypatch.setitem(FIGURES, "slow", Figure("slow", "a claim", _fake(seen, True),
                                                quick_seconds=1200.0))
    assert main(["reproduce", "slow", "--jobs", "1", "--no-progress",
                 "--out", str(tmp_path / "a")]) == 0
    assert seen.get("jobs", 1) == 1
    assert "takes about 20 min here with 1 job(s)" in capsys.readouterr().err
    monkeypatch.setitem(FIGURES, "plain", Figure("plain", "a claim", _fake({}, False)))
    assert main(["reproduce", "plain", "--no-progress", "--out", str(tmp_path / "b")]) == 0
    assert main(["reproduce", "plain", "--jobs", "2", "--out", str(tmp_path / "c")]) == 2
    assert "--jobs is available for figure" in capsys.readouterr().err
