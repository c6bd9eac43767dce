"""``results/REPORT.md``: one row per reproduced figure with its claim, verdict, PNG and runtime.

Written by ``compsde reproduce all`` after every figure (atomically, so the file is always
complete): figures still to come are listed as ``pending``, a figure whose code raised is listed
as ``error`` with the one-line reason, so an interrupted or partly failing reproduction still
leaves a readable report. Claims are the paper's captions as summarised in THEORY.md §7.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..io import write_atomic
from ..verdicts import summary

STATUSES = ("pass", "fail", "error", "pending")


@dataclass
class ReportRow:
    """One figure of the report; ``panels`` maps a panel name to its verdict and detail."""

    name: str
    claim: str
    status: str
    png: str | None = None
    seconds: float | None = None
    panels: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""
    cache: str = ""  # e.g. "18 of 18 runs from the cache (825 s of training when computed)"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @classmethod
    def from_outcome(cls, outcome: Any, note: str = "") -> ReportRow:
        """A row from a :class:`~compsde.experiments.registry.FigureOutcome`."""
        data = outcome.data or {}
        cache = ""
        if data.get("runs_cached"):
            total = data["runs_cached"] + data.get("runs_computed", 0)
            cache = f"{data['runs_cached']} of {total} runs from the cache"
            if data.get("training_seconds"):
                cache += f" ({_duration(data['training_seconds'])} of training when computed)"
        return cls(name=outcome.name, claim=outcome.claim, status=outcome.verdict,
                   png=str(outcome.png), seconds=outcome.seconds, panels=outcome.panels,
                   note=note, cache=cache)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (no pipes, no newlines)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def _link(png: str | None, folder: Path) -> str:
    if not png:
        return "–"
    path = Path(png)
    try:
        rel = os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive on Windows
        rel = str(path)
    return f"[{path.name}]({rel.replace(os.sep, '/')})"


def machine_line() -> str:
    """Where the report was produced: OS, CPU count, torch version and accelerator."""
    accel = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}, {accel}")


def render(rows: Sequence[ReportRow], folder: Path, *, preset: str, seed: int, command: str,
           total_seconds: float | None = None, now: float | None = None) -> str:
    """The markdown text of the report (links relative to ``folder``)."""
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(now))
    done = [r for r in rows if r.status != "pending"]
    passed = sum(r.status == "pass" for r in rows)
    lines = [
        "# compsde: reproduction of the paper's figures",
        "",
        "Compagnoni, Islamov, Proske, Lucchi, *Unbiased and Sign Compression in Distributed "
        "Learning: Comparing Noise Resilience via SDEs*, AISTATS 2025. Claims: THEORY.md §7; "
        "verdict rules: THEORY.md §10.",
        "",
        f"- command: `{command}`",
        f"- preset: {preset}, seed {seed}",
        f"- written: {stamp} on {machine_line()}",
        f"- {passed} of {len(rows)} figure(s) pass"
        + (f"; {len(rows) - len(done)} still pending" if len(done) < len(rows) else "")
        + (f"; total runtime {_duration(total_seconds)}" if total_seconds is not None else ""),
        "",
        "| figure | claim | verdict | PNG | runtime |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = f"**{row.status.upper()}**" if row.status in ("fail", "error") else row.status
        lines.append(f"| {row.name} | {_cell(row.claim)} | {verdict} | "
                     f"{_link(row.png, folder)} | {_duration(row.seconds)}"
                     + (f"; {row.cache}" if row.cache else "") + " |")
    for row in rows:
        if not row.panels and not row.note:
            continue
        lines += ["", f"## {row.name}", ""]
        if row.note:
            lines += [_cell(row.note), ""]
        for panel, info in row.panels.items():
            detail = info.get("detail", "")
            lines.append(f"- {panel}: {info.get('verdict', '?')}"
                         + (f" — {_cell(detail)}" if detail else ""))
            if info.get("rule"):
                lines.append(f"  - rule: {_cell(info['rule'])}")
            for entry in flat_checks(info):
                lines.append(f"  - {_cell(summary(entry))}")
    return "\n".join(lines) + "\n"


def flat_checks(panel: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check of a panel, with nested sub-panels (e.g. fig1's phases) flattened."""
    checks = panel.get("checks", [])
    if isinstance(checks, dict):
        return [entry for sub in checks.values() for entry in flat_checks(sub)]
    return [c for c in checks if isinstance(c, dict) and "quantity" in c]


def write_report(path: str | Path, rows: Sequence[ReportRow], *, preset: str, seed: int,
                 command: str, total_seconds: float | None = None) -> Path:
    """Write REPORT.md atomically to ``path``."""
    target = Path(path)
    text = render(rows, target.parent, preset=preset, seed=seed, command=command,
                  total_seconds=total_seconds)
    return write_atomic(target, text.encode())
