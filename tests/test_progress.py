"""Progress: periodic plain lines when stderr is not a terminal, silence when switched off."""

from __future__ import annotations

from compsde.cli import main
from compsde.progress import LineProgress, progress_bar


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_line_progress_prints_one_line_per_interval(tmp_path):
    clock, log = _Clock(), tmp_path / "log.txt"
    with open(log, "w") as handle:
        bar = LineProgress(100, desc="simulate dsgd", unit="step", interval=10.0,
                           file=handle, clock=clock)
        for _ in range(100):
            clock.now += 0.5                  # 50 s in all: a line at 10, 20, 30, 40, 50 s
            bar.update(1)
        bar.close()
    lines = log.read_text().splitlines()
    assert len(lines) == 6 and "\r" not in log.read_text()
    assert lines[0] == "simulate dsgd: 20% (20/100 step), 10 s elapsed, ~40 s left"
    assert lines[-1].startswith("simulate dsgd: 100% (100/100 step), 50 s elapsed")


def test_progress_without_a_terminal_is_lines(capsys):
    assert isinstance(progress_bar(10, enabled=True), LineProgress)   # capsys: not a TTY
    silent = progress_bar(10, enabled=False)
    silent.update(5)
    silent.close()
    assert capsys.readouterr().err == ""


def test_simulate_without_a_terminal_prints_progress_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("compsde.progress.LINE_INTERVAL", 0.0)   # a line per step
    assert main(["simulate", "--steps", "20", "--runs", "2", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 20 and lines[-1].startswith("simulate dsgd: 100% (20/20 step)")
    assert main(["simulate", "--steps", "20", "--runs", "2", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
