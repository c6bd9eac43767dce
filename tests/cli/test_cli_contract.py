"""The contract of every subcommand and of the API: every mistake is caught before any work.

CLI: exit code 2, one line ``error: …`` naming the flag as typed, no traceback, and (for --out,
sizes, devices, contradictory flags) nothing computed first. API: ``ValueError`` naming the
parameter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import click
import pytest

import compsde
from compsde.cli import cli, main
from compsde.compressors.sparse import CompressionWarning
from compsde.sde import simulate_sde

SMALL = ["--steps", "5", "--runs", "4", "--no-progress"]


class WorkStarted(AssertionError):
    """Raised by the patched work functions: the command started work before its checks."""


def _forbid(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    def work(*args, **kwargs):
        raise WorkStarted(target)
    monkeypatch.setattr(target, work)


def _one_line_error(code: int, err: str, flag: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and flag in lines[0], err
    assert "Traceback" not in err


# -- the output folder, checked before any work, in every subcommand ------------------------------

WORK = {  # subcommand: (arguments, the work function that must not run)
    "simulate": ([*SMALL], "compsde.cli.simulate_cmd.simulate"),
    "sde": ([*SMALL], "compsde.cli.sde_cmd.simulate_sde"),
    "validate": ([*SMALL], "compsde.cli.validate_cmd.validate"),
    "scale": (["--lr", "0.1", "--batch", "8", "--agents", "4", "--target", "dsignsgd",
               "--vary", "lr"], "compsde.cli.scale_cmd.solve"),
    "demo": (["--runs", "4", "--steps", "5"], "compsde.experiments.demo.simulate"),
    "advise": (["--model", "mlp:hidden=8", "--data", "synthetic:n=256,shape=1x8x8"],
               "compsde.cli.advise_cmd.measure_dataset"),
    "reproduce": (["fig3"], "compsde.cli.reproduce_cmd.run_figure"),
    "train": (["--steps", "2", "--simulate-agents", "2"], "compsde.distributed.runner.run"),
}


@pytest.mark.parametrize("kind", ["under-a-file", "is-a-file"])
@pytest.mark.parametrize("command", sorted(WORK))
def test_out_is_checked_before_any_work(command, kind, tmp_path, monkeypatch, capsys):
    args, target = WORK[command]
    _forbid(monkeypatch, target)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "sub" if kind == "under-a-file" else blocker
    code = main([command, *args, "--out", str(out)])
    _one_line_error(code, capsys.readouterr().err, "--out")
    assert blocker.read_text() == "not a folder"


def test_out_under_proc_is_refused_before_the_simulation(monkeypatch, capsys):
    _forbid(monkeypatch, "compsde.cli.simulate_cmd.simulate")
    code = main(["simulate", *SMALL, "--out", "/proc/compsde-cannot-write-here"])
    _one_line_error(code, capsys.readouterr().err, "--out")


def test_api_out_check_names_the_parameter(tmp_path):
    from compsde._checks import check_out_dir

    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"^out .* is a file"):
        check_out_dir(tmp_path / "f")
    with pytest.raises(ValueError, match=r"^out .* cannot be created"):
        check_out_dir(tmp_path / "f" / "sub")
    assert check_out_dir(tmp_path / "new" / "deeper").is_dir()


# -- one device check -----------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["tpu", "cuda:99", "banana"])
@pytest.mark.parametrize("command", ["simulate", "sde", "validate", "advise", "train"])
def test_unavailable_device_is_one_line(command, device, tmp_path, monkeypatch, capsys):
    args, target = WORK[command]
    _forbid(monkeypatch, target)
    code = main([command, *args, "--device", device, "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "--device")


@pytest.mark.parametrize("run", [compsde.simulate, simulate_sde])
@pytest.mark.parametrize("device", ["tpu", "cuda:99"])
def test_api_device_error_names_device(run, device):
    with pytest.raises(ValueError, match=r"^device"):
        run("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=2, device=device)


# -- runs that cannot fit --------------------------------------------------------------------------

def test_working_set_beyond_the_budget_is_refused_with_what_it_needs(tmp_path, capsys):
    code = main(["simulate", "--landscape", "quadratic:d=1000", "--agents", "1000000",
                 *SMALL, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, "memory_budget")
    assert "GiB" in err and not (tmp_path / "result.json").exists()
    with pytest.raises(ValueError, match=r"one run needs 29\.8 GiB"):
        compsde.simulate("dsgd", "quadratic:d=1000", "gaussian", lr=0.1, steps=2,
                         agents=1_000_000)
    with pytest.raises(ValueError, match=r"one run needs .* GiB"):
        simulate_sde("dsgd", "quadratic:d=1000", "gaussian", lr=0.1, steps=2,
                     agents=1_000_000)


def test_records_beyond_the_machine_are_refused_naming_record_every(tmp_path, capsys):
    code = main(["simulate", "--steps", str(10**12), "--record-every", "1", "--runs", "1000",
                 "--no-progress", "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "--record-every must be at least")
    with pytest.raises(ValueError, match=r"^record_every must be at least"):
        simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=10**12, runs=1000)


def test_randk_ratio_below_one_over_d_warns_with_effective_k_and_omega(tmp_path, capsys):
    code = main(["simulate", "--method", "dcsgd:randk:ratio=0.01", *SMALL, "--out",
                 str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0
    assert len(err) == 1 and err[0].startswith("warning:")
    assert "k = 1" in err[0] and "ω = 4" in err[0] and "ω = 99" in err[0]
    with pytest.warns(CompressionWarning, match="ratio=0.02 at d = 5 keeps k = 1.*ω = 4"):
        compsde.simulate("dcsgd:randk:ratio=0.02", "quadratic:d=5", "gaussian", lr=0.1,
                         steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # a ratio ≥ 1/d says what it means: no warning
        compsde.simulate("dcsgd:randk:ratio=0.2", "quadratic:d=5", "gaussian", lr=0.1, steps=2)


# -- contradictory or late-checked flags ----------------------------------------------------------

def test_quick_and_full_contradict(tmp_path, monkeypatch, capsys):
    _forbid(monkeypatch, "compsde.cli.reproduce_cmd.run_figure")
    code = main(["reproduce", "fig3", "--quick", "--full", "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "--quick and --full")


def test_reproduce_without_a_name_lists_the_names(capsys):
    code = main(["reproduce"])
    err = capsys.readouterr().err
    _one_line_error(code, err, "NAME")
    assert all(name in err for name in ("all", "fig1", "fig3", "fig5"))


def test_validate_needs_two_runs_before_it_starts(tmp_path, monkeypatch, capsys):
    _forbid(monkeypatch, "compsde.cli.validate_cmd.validate")
    code = main(["validate", "--runs", "1", "--steps", "5", "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "--runs")


@pytest.mark.parametrize("values", ["0.1,x", "0.1", "0.1,-0.2", "0.1,0.1"])
def test_lr_sweep_is_checked_first_under_its_flag(values, tmp_path, monkeypatch, capsys):
    _forbid(monkeypatch, "compsde.cli.validate_cmd.validate")
    code = main(["validate", *SMALL, "--lr-sweep", values, "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "--lr-sweep")


def test_lr_sweep_alone_does_not_swallow_the_next_flag(tmp_path, monkeypatch, capsys):
    seen = {}

    def sweep(*args, lrs, **kwargs):
        seen["lrs"] = lrs
        raise WorkStarted("lr_sweep reached")
    monkeypatch.setattr("compsde.cli.validate_cmd.lr_sweep", sweep)
    with pytest.raises(WorkStarted):
        main(["validate", "--lr", "0.02", "--lr-sweep", "--steps", "5", "--runs", "4",
              "--no-progress", "--out", str(tmp_path)])
    assert seen["lrs"] == pytest.approx([0.04, 0.02, 0.01])


def test_compsde_alone_prints_its_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("Usage: compsde")
    assert all(name in out.out for name in WORK) and "error" not in out.err


def test_omega_only_method_gets_a_precise_error(tmp_path, capsys):
    code = main(["simulate", "--method", "dcsgd:omega=9", *SMALL, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, "--method")
    assert "malformed" not in err and "bernoulli:p=" in err
    with pytest.raises(ValueError, match="gives only ω"):
        compsde.simulate("dcsgd:omega=9", "quadratic:d=2", "gaussian", lr=0.1, steps=2)


def test_errors_name_the_flag_as_typed(tmp_path, capsys):
    code = main(["simulate", *SMALL, "--record-every", "0", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, "--record-every")
    assert "record_every" not in err


# -- API type rules --------------------------------------------------------------------------------

def test_distributed_is_reachable_after_import_compsde():
    code = "import compsde; print(callable(compsde.distributed.register))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


@pytest.mark.parametrize("run", [compsde.simulate, simulate_sde])
@pytest.mark.parametrize("bad, name", [
    ({"x0": "a"}, "x0"), ({"x0": [True, False]}, "x0"), ({"lr": "0.01"}, "lr"),
    ({"steps": "5"}, "steps"), ({"steps": 1.5}, "steps"), ({"runs": "2"}, "runs"),
    ({"agents": "2"}, "agents"), ({"seed": True}, "seed"),
])
def test_numbers_are_passed_as_numbers(run, bad, name):
    kwargs = {"lr": 0.1, "steps": 2} | bad
    with pytest.raises(ValueError, match=rf"^{name} "):
        run("dsgd", "quadratic:d=2", "gaussian", **kwargs)


def test_tail_mean_fraction_is_in_zero_one():
    result = compsde.simulate("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=20, runs=8)
    for fraction in (2.0, 0, -0.5, "0.5"):
        with pytest.raises(ValueError, match=r"^fraction"):
            result.tail_mean(fraction)
    level, se = result.tail_mean(1e-9)       # the smallest window is the last record
    assert level == pytest.approx(result.loss_mean[-1]) and se > 0


# -- help, --x0, default folders, progress ---------------------------------------------------------

def test_every_flag_has_a_description():
    for name, command in cli.commands.items():
        if name == "train":
            continue
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                assert param.help, f"{name} {param.opts[0]} has no help"


def test_train_help_has_a_description_per_flag_and_no_fake_defaults(capsys):
    from compsde.distributed.train import build_parser

    for action in build_parser()._actions:
        assert action.help, action.option_strings
    assert main(["train", "-h"]) == 0
    text = capsys.readouterr().out
    assert "default: None" not in text and "[default: 64]" in text


def test_simulate_sde_validate_have_their_own_default_folders():
    defaults = {name: next(p.default for p in cli.commands[name].params if p.name == "out")
                for name in ("simulate", "sde", "validate")}
    assert len({str(d) for d in defaults.values()}) == 3


def test_x0_takes_a_vector(tmp_path, capsys):
    code = main(["simulate", "--landscape", "quadratic:d=3", "--x0", "1,-2,0.5", *SMALL,
                 "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "result.json").read_text())["config"]
    assert config["x0"] == [1.0, -2.0, 0.5]
    code = main(["simulate", "--landscape", "quadratic:d=3", "--x0", "1,2", *SMALL,
                 "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "--x0")


def test_readme_defaults_named_in_help_exist():
    """The default folders the README names are the ones the commands use."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in ("simulate", "sde", "validate"):
        default = next(p.default for p in cli.commands[name].params if p.name == "out")
        assert str(default) in readme, default
