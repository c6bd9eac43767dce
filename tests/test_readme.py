"""Every command and snippet of README.md runs as written (shrunk where it is long).

Commands come from the ```bash blocks, snippets from the ```python blocks and the inline
``compsde.<module>.make(...)`` calls. Shrinking only lowers sizes (steps, runs, samples) and
points ``--out`` into a temporary folder; the long ones (a figure, torchrun) are marked slow.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compsde.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Sizes of the shrunk runs: small enough for seconds on 2 cores, large enough to compute
# standard errors (runs ≥ 2) and to record a curve.
SHRINK = {
    "simulate": {"--steps": "60", "--runs": "8"},
    "sde": {"--steps": "60", "--runs": "8"},
    "validate": {"--steps": "40", "--runs": "8"},
    "demo": {"--steps": "60", "--runs": "8"},
    "advise": {"--samples": "16", "--warmup": "5", "--curvature-batch": "64"},
    "train": {"--steps": "3", "--log-every": "1"},
    "compsde.distributed.train": {"--steps": "3", "--log-every": "1"},
}
SLOW = ("torchrun", "compsde reproduce")
# Commands that judge a claim: at shrunk sizes a verdict may fail (exit 1) — the command still
# has to run to its verdict, never end in a usage error (exit 2) or a traceback.
VERDICTS = ("demo", "validate", "reproduce")
TEMPLATE = "..."  # a command shown as a template: placeholder hosts, elided flags
DEFAULT_DATA = {"train": "fashion-mnist", "advise": "fashion-mnist",
                "compsde.distributed.train": "fashion-mnist"}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    """Every command line of the bash blocks, continuation lines joined, comments dropped."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                found.append(shlex.join(words))
    return found


def shrink(words: list[str], out: Path) -> list[str]:
    """Lower the sizes named in SHRINK and send ``--out`` to ``out``."""
    if words[0] not in ("compsde", "torchrun"):
        return list(words)
    key = words[words.index("-m") + 1] if "-m" in words else words[1] if len(words) > 1 else ""
    sizes = SHRINK.get(key, {})
    words = list(words)
    for flag, value in sizes.items():
        if flag in words:
            words[words.index(flag) + 1] = value
        else:
            words += [flag, value]
    if "--out" in words:
        words[words.index("--out") + 1] = str(out)
    elif key in SHRINK or key in ("scale",):
        words += ["--out", str(out)]
    return words


def data_sets(command: str) -> tuple[str, ...]:
    """The data sets ``command`` reads: its ``--data`` (or the command's default), or the
    figures' (the registry says which)."""
    from compsde.experiments import load_all

    words = shlex.split(command)
    if words[0] not in ("compsde", "torchrun"):
        return ()
    key = words[words.index("-m") + 1] if "-m" in words else words[1] if len(words) > 1 else ""
    if key == "reproduce":
        figures = load_all()
        names = sorted(figures) if words[2] == "all" else [words[2]]
        return tuple(dict.fromkeys(d for n in names for d in figures[n].data))
    if "--data" in words:
        return (words[words.index("--data") + 1],)
    return (DEFAULT_DATA[key],) if key in DEFAULT_DATA else ()


def _marks(command: str) -> list:
    if TEMPLATE in shlex.split(command):              # parsed, not run (test_readme_command_runs)
        return []
    marks = []
    needs = data_sets(command)
    if command.startswith(SLOW) or "fashion-mnist" in needs:  # a figure, torchrun, or ~10 s
        marks.append(pytest.mark.slow)                       # of loading Fashion-MNIST
    if needs:
        marks.append(pytest.mark.needs_data(*needs))
    return marks


COMMANDS = [pytest.param(c, id=c[:60], marks=_marks(c)) for c in commands()]


def test_the_readme_has_commands_and_snippets():
    assert len(commands()) >= 10 and len(blocks("python")) >= 2


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                   # default folders land in the temp folder
    words = shrink(shlex.split(command), tmp_path / "out")
    if words[0] == "make":
        done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr  # the target exists and is well-formed
        return
    if words[0] == "torchrun" and TEMPLATE in words:
        # A cluster template (HOST0, elided flags): torchrun's parser and the trainer's accept
        # what it shows. Two real node agents are started by tests/distributed/test_train.py
        # (test_two_torchrun_agents_as_two_nodes).
        from torch.distributed.run import get_args_parser

        from compsde.distributed.train import build_parser

        at = words.index("-m")
        launch = get_args_parser().parse_args([*words[1:at], "-m", words[at + 1]])
        assert launch.module and launch.training_script == "compsde.distributed.train"
        build_parser().parse_args([w for w in words[at + 2:] if w != TEMPLATE])
        return
    if words[0] == "torchrun":
        launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        assert launcher is not None
        done = subprocess.run([launcher, *words[1:]], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return
    assert words[0] == "compsde", command
    code = main(words[1:])
    captured = capsys.readouterr()
    if words[1] in VERDICTS and code == 1:
        assert "verdict" in captured.out, captured.out[-2000:]
    else:
        assert code == 0, captured.err[-2000:]
    assert "error:" not in captured.err


def test_readme_python_snippet_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    snippet = blocks("python")[0]
    shrunk = snippet.replace("steps=3000", "steps=300").replace("runs=200", "runs=16")
    assert shrunk != snippet                      # the sizes this test shrinks are still there
    exec(compile(shrunk, "README.md", "exec"), {})
    assert (tmp_path / "results" / "my-run" / "result.json").is_file()
    assert capsys.readouterr().out.strip()        # it printed the three numbers


def test_readme_inline_building_blocks_run():
    import compsde

    calls = re.findall(r"`(compsde\.[a-z_.]+\([^`]*\))`", README)
    assert len(calls) >= 4
    for call in calls:
        assert eval(call, {"compsde": compsde}) is not None, call


def test_readme_register_snippet_runs(tmp_path):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import compsde

    snippet = next(b for b in blocks("python") if "register" in b)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                            world_size=1)
    try:
        ddp_model = DistributedDataParallel(torch.nn.Linear(4, 2))
        scope = {"compsde": compsde, "ddp_model": ddp_model}
        exec(compile(snippet, "README.md", "exec"), scope)
        optimizer = torch.optim.SGD(ddp_model.parameters(), lr=0.1)
        before = [p.detach().clone() for p in ddp_model.parameters()]
        ddp_model(torch.randn(3, 4)).square().sum().backward()
        optimizer.step()
        moved = [(p.detach() - b).abs() for p, b in zip(ddp_model.parameters(), before,
                                                         strict=True)]
        # one DSignSGD step with N = 1 moves every coordinate by exactly lr · |sign| = 0.1
        assert all(torch.allclose(m[m > 0], torch.tensor(0.1)) for m in moved)
        assert scope["state"] is not None
    finally:
        dist.destroy_process_group()
