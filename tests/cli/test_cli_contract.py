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
                 "--allow-long", "--no-progress", "--out", str(tmp_path)])
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


# -- outputs: one run per --out, every output path probed before the work ------------------------

OUTPUTS = {  # subcommand: a file it writes into --out
    "simulate": "result.json", "sde": "result.json", "validate": "result.json",
    "scale": "result.json", "demo": "demo.png", "advise": "advise.png", "reproduce": "fig3.json",
}


@pytest.mark.parametrize("command", sorted(OUTPUTS))
def test_out_in_use_by_another_run_is_refused_before_any_work(command, tmp_path, monkeypatch,
                                                              capsys):
    import fcntl

    args, target = WORK[command]
    _forbid(monkeypatch, target)
    with open(tmp_path / ".compsde.lock", "w") as other:    # another run holds the folder
        other.write("4242\n")
        other.flush()
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        code = main([command, *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, "--out")
    assert "in use by another compsde run (process 4242)" in err


def test_the_lock_ends_with_the_run(tmp_path, capsys):
    for _ in range(2):                       # the same --out, one run after the other
        assert main(["simulate", *SMALL, "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "result.json").is_file()


def test_two_runs_at_once_on_one_out_one_is_refused(tmp_path):
    """A real second process: one of two simultaneous runs gets the folder, the other exit 2."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom compsde.cli.common import lock_out\n"
         "from pathlib import Path\nlock_out(Path(sys.argv[1]))\nprint('held', flush=True)\n"
         "time.sleep(60)\n", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run([sys.executable, "-m", "compsde", "simulate", *SMALL, "--out",
                               str(tmp_path)], capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stderr
    assert f"process {holder.pid}" in done.stderr and not (tmp_path / "result.json").exists()


@pytest.mark.parametrize("command", sorted(OUTPUTS))
def test_a_folder_in_place_of_an_output_file_is_refused_before_any_work(command, tmp_path,
                                                                        monkeypatch, capsys):
    args, target = WORK[command]
    _forbid(monkeypatch, target)
    (tmp_path / OUTPUTS[command]).mkdir()
    code = main([command, *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, "--out")
    assert OUTPUTS[command] in err and "is a folder" in err


@pytest.mark.parametrize("name", ["loss.png"])
@pytest.mark.parametrize("command", ["simulate", "sde", "validate"])
def test_the_plot_file_is_probed_when_plot_is_asked_for(command, name, tmp_path, monkeypatch,
                                                        capsys):
    args, target = WORK[command]
    _forbid(monkeypatch, target)
    (tmp_path / name).mkdir()
    code = main([command, *args, "--plot", "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "--out")


@pytest.mark.parametrize("blocker", ["cache", "cache/fig3"])
def test_a_file_in_place_of_the_run_cache_is_refused_before_any_work(blocker, tmp_path,
                                                                     monkeypatch, capsys):
    _forbid(monkeypatch, "compsde.cli.reproduce_cmd.run_figure")
    (tmp_path / blocker).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / blocker).write_text("not a folder")
    code = main(["reproduce", "fig3", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, "--out")
    assert "is a file where the run keeps a folder" in err


@pytest.mark.parametrize("command", sorted(OUTPUTS))
def test_an_empty_out_is_refused(command, tmp_path, monkeypatch, capsys):
    args, target = WORK[command]
    _forbid(monkeypatch, target)
    monkeypatch.chdir(tmp_path)
    code = main([command, *args, "--out", ""])
    _one_line_error(code, capsys.readouterr().err, "--out")
    assert list(tmp_path.iterdir()) == []


def test_run_result_save_into_an_unwritable_place_names_out_dir(tmp_path):
    result = compsde.simulate("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=2)
    with pytest.raises(ValueError, match=r"^out_dir '/proc/x' cannot be created"):
        result.save("/proc/x")
    (tmp_path / "result.json").mkdir()
    with pytest.raises(ValueError, match=r"^out_dir .*result.json there is a folder"):
        result.save(tmp_path)


# -- executors: addresses checked before any work ---------------------------------------------

@pytest.mark.parametrize("address", ["127.0.0.1:1", "no-such-host.invalid:6379", "nohost"])
def test_an_unreachable_ray_address_is_one_line_before_any_work(address, tmp_path, monkeypatch,
                                                                capsys):
    _forbid(monkeypatch, "compsde.cli.simulate_cmd.simulate")
    code = main(["simulate", *SMALL, "--executor", f"ray:{address}", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, "--executor")
    assert address in err


@pytest.mark.parametrize("command", ["simulate", "sde", "validate"])
def test_jobs_is_the_shorthand_of_processes(command, tmp_path, monkeypatch):
    seen = {}

    def work(*args, executor, **kwargs):
        seen["executor"] = executor
        raise WorkStarted(command)
    name = {"simulate": "simulate", "sde": "simulate_sde", "validate": "validate"}[command]
    monkeypatch.setattr(f"compsde.cli.{command}_cmd.{name}", work)
    with pytest.raises(WorkStarted):
        main([command, *SMALL, "--jobs", "2", "--out", str(tmp_path)])
    assert seen["executor"].spec == "processes:2"


# -- sizes and times: refused with what they would need -----------------------------------------

@pytest.mark.parametrize("command, args, flag", [
    ("simulate", ["--steps", str(10**14)], "--steps"),
    ("sde", ["--dt", "1e-300"], "--dt"),
    ("validate", ["--substeps", str(10**12)], "--substeps"),
    ("validate", ["--steps", "5", "--lr-sweep", "--horizon", "1e9"], "--horizon"),
])
def test_runs_longer_than_a_day_are_refused_with_their_estimate(command, args, flag, tmp_path,
                                                               monkeypatch, capsys):
    _forbid(monkeypatch, WORK[command][1])
    code = main([command, "--no-progress", "--runs", "4", *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, flag)
    assert "would make the run take at least" in err and "--allow-long" in err


def test_allow_long_lets_a_long_run_start(tmp_path, monkeypatch):
    _forbid(monkeypatch, "compsde.cli.simulate_cmd.simulate")
    with pytest.raises(WorkStarted):
        main(["simulate", "--steps", str(10**10), "--runs", "4", "--allow-long",
              "--no-progress", "--out", str(tmp_path)])


def test_duration_bounds():
    from compsde.limits import check_duration, format_duration, least_seconds

    assert least_seconds(10**6) == pytest.approx(10.0)                   # 10 µs a step
    assert least_seconds(10, 1e12) == pytest.approx(100.0)               # 1e11 numbers / s
    assert format_duration(86_400) == "1 day" and format_duration(90) == "1.5 min"
    check_duration("--steps", 1, 86_400.0)                               # the bound itself
    with pytest.raises(ValueError, match=r"^--steps 5 would make the run take at least 1\.16"):
        check_duration("--steps", 5, 100_000.0)
    check_duration("--steps", 5, 100_000.0, allow=True)


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(f"the quick brown fox {i} jumps over the lazy dog." * 4
                                for i in range(40)))
    return path


ADVISE = ["--samples", "16", "--warmup", "1", "--batch", "8"]


@pytest.mark.parametrize("args, flag", [
    (["--threads", "1000000"], "--threads"),
    (["--curvature-batch", "0"], "--curvature-batch"),
    (["--curvature-batch", str(10**12)], "--curvature-batch"),
    (["--lr", "1e308"], "--lr"),
    (["--warmup", str(10**12)], "--warmup"),
])
def test_advise_sizes_and_numbers_at_the_limits_name_the_flag(args, flag, tmp_path, monkeypatch,
                                                              capsys):
    code = main(["advise", "--model", "mlp:hidden=8", "--data", "synthetic:n=256,shape=1x8x8",
                 *ADVISE, *args, "--out", str(tmp_path / "out")])
    _one_line_error(code, capsys.readouterr().err, flag)
    assert not (tmp_path / "out" / "result.json").exists()


@pytest.mark.parametrize("model", ["gpt:depth=100000", f"gpt:dim={10**11}", "gpt:mlp=inf",
                                   "gpt:mlp=1e300"])
def test_gpt_beyond_the_machine_is_refused_naming_model(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("compsde.simulation.kept_limit", lambda: 16 << 30)  # a 32 GiB machine
    code = main(["advise", "--model", model, "--data", f"text:path={_text_file(tmp_path)}",
                 *ADVISE, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    _one_line_error(code, err, "--model" if "dim" in model or "depth" in model else "mlp")
    if "mlp" not in model:
        assert "GiB" in err or "PiB" in err


def test_model_size_check_counts_the_gpt_exactly():
    from compsde.nn.gpt import GPT, gpt_parameters
    from compsde.nn.models import count_parameters, make_model

    for vocab, context, dim, depth, mlp in [(500, 16, 32, 1, 2.0), (97, 8, 12, 3, 1.5)]:
        model = GPT(vocab, context, dim=dim, depth=depth, heads=2, mlp_ratio=mlp)
        assert count_parameters(model) == gpt_parameters(vocab, context, dim, depth, mlp)
    with pytest.raises(ValueError, match=r"^model mlp:hidden=.* parameters: a run needs"):
        make_model(f"mlp:hidden={10**6}/{10**6}", (1, 8, 8), 10)


@pytest.mark.parametrize("command, args", [
    ("reproduce", ["lm", "--seed", str(2**70)]), ("demo", ["--seed", str(2**70)])])
def test_seeds_beyond_the_generators_name_seed(command, args, tmp_path, monkeypatch, capsys):
    _forbid(monkeypatch, WORK[command][1])
    code = main([command, *args, "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "--seed")


# -- text that is not text ----------------------------------------------------------------------

NOT_TEXT = {
    "elf": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4,
    "latin-1": "café au lait, naïve façade\n\nencore un paragraphe, déjà vu\n".encode("latin-1"),
    "utf-16": "one paragraph\n\nanother paragraph\n".encode("utf-16"),
    "utf-16-le": "one paragraph\n\nanother paragraph\n".encode("utf-16-le"),
}


@pytest.mark.parametrize("kind", sorted(NOT_TEXT))
def test_text_that_is_not_utf8_is_refused_naming_the_file(kind, tmp_path, capsys):
    from compsde.nn.text import load_text

    path = tmp_path / f"{kind}.bin"
    path.write_bytes(NOT_TEXT[kind])
    with pytest.raises(ValueError, match=rf"^text file {path} (is|holds)"):
        load_text(str(path), context=4)
    code = main(["advise", "--model", "gpt:size=tiny", "--data", f"text:path={path}", *ADVISE,
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    _one_line_error(code, err, str(path))
    assert "\ufffd" not in err


def test_a_stated_encoding_reads_the_file():
    import tempfile

    from compsde.nn.text import read_corpus
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "latin.txt"
        path.write_bytes(NOT_TEXT["latin-1"])
        assert read_corpus(path, "latin-1")[0] == "café au lait, naïve façade"
        path.write_bytes(NOT_TEXT["utf-16"])
        assert read_corpus(path, "utf-16") == ["one paragraph", "another paragraph"]
        with pytest.raises(ValueError, match=r"^encoding of text must be"):
            read_corpus(path, "klingon")


# -- help against README ------------------------------------------------------------------------

def test_reproduce_help_names_every_figure(capsys):
    from compsde.experiments import load_all

    assert main(["reproduce", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in load_all())


def test_reproduce_speaks_of_the_flag_that_was_typed(tmp_path, monkeypatch, capsys):
    _forbid(monkeypatch, "compsde.cli.reproduce_cmd.run_figure")
    code = main(["reproduce", "fig3", "--executor", "processes:2", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, "--executor processes:2")
    assert "--jobs" not in err
    code = main(["reproduce", "fig3", "--jobs", "2", "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "--jobs")


def test_scale_shows_the_convention_as_it_is_typed(capsys):
    assert main(["scale", "--help"]) == 0
    text = capsys.readouterr().out
    assert "[T|K]" in text and "[t|k]" not in text and "[default: T]" in text


# -- pictures: legends and notes never cover the curves ---------------------------------------

def _covers_axes(box, ax) -> bool:
    fig = ax.figure
    fig.canvas.draw()
    return box.get_window_extent().overlaps(ax.get_window_extent())


def test_demo_legends_and_notes_sit_below_the_panels(tmp_path, monkeypatch):
    seen = []

    def keep(fig, path, dpi=120):
        seen.append(fig)
        Path(path).write_bytes(b"")
        return Path(path)
    monkeypatch.setattr("compsde.cli.demo_cmd.save_figure", keep)
    main(["demo", "--runs", "4", "--steps", "30", "--out", str(tmp_path)])
    (fig,) = seen
    for ax in fig.axes:
        assert ax.get_legend() is not None and not _covers_axes(ax.get_legend(), ax)
        assert ax.texts and not any(_covers_axes(t, ax) for t in ax.texts)


def test_validate_sweep_panel_says_inconclusive_where_no_slope_can_be_fitted():
    from types import SimpleNamespace

    import numpy as np

    from compsde.cli.validate_cmd import _sweep_title

    def sweep(resolved, verdict):
        return SimpleNamespace(resolved=np.array(resolved), lrs=np.array([0.04, 0.02, 0.01]),
                               judgement={"verdict": verdict})
    title = _sweep_title(sweep([False, True, False], "fail"))
    assert "INCONCLUSIVE" in title and "1 of 3" in title and "FAIL" not in title
    assert _sweep_title(sweep([True, True, False], "fail")).endswith("verdict FAIL")
    assert _sweep_title(sweep([True, True, True], "pass")).endswith("verdict PASS")


def test_run_time_is_measured_on_the_first_steps():
    import time

    from compsde.limits import measured_seconds

    calls = []

    def probe(k):                       # 40 ms to set up, then 1 ms a step
        calls.append(k)
        time.sleep(0.04 + 1e-3 * k)
    seconds = measured_seconds(probe, 10**6)
    assert 0.7e3 < seconds < 1.6e3, seconds          # 10⁶ steps × 1 ms, the set-up left out
    assert max(calls) < 1000                          # a fraction of a second of probing
    assert measured_seconds(probe, 10**6, workers=4) < seconds / 2


def _timed_simulate(seen):
    def work(*args, steps, **kwargs):
        if steps >= 10**6:                             # the run itself
            raise WorkStarted("simulate")
        seen.append(steps)
        import time
        time.sleep(1e-3 * steps)                       # the probes: 1 ms a step
    return work


def test_a_run_measured_longer_than_a_day_is_refused_before_it_starts(tmp_path, monkeypatch,
                                                                      capsys):
    seen = []
    monkeypatch.setattr("compsde.cli.simulate_cmd.simulate", _timed_simulate(seen))
    code = main(["simulate", "--steps", str(10**8), "--runs", "4", "--no-progress", "--out",
                 str(tmp_path)])                       # 10⁸ steps × 1 ms: about 28 h
    err = capsys.readouterr().err
    _one_line_error(code, err, "--steps")
    assert "measured on its first steps" in err and seen


def test_a_long_run_says_how_long_it_takes_before_it_starts(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr("compsde.cli.simulate_cmd.simulate", _timed_simulate(seen))
    with pytest.raises(WorkStarted):
        main(["simulate", "--steps", str(10**7), "--runs", "4", "--no-progress", "--out",
              str(tmp_path)])                          # about 2.8 h: runs, with a note
    err = capsys.readouterr().err
    assert "note: this run takes about" in err and " h " in err


def test_a_file_system_without_locks_runs_with_one_warning(tmp_path, monkeypatch, capsys):
    import errno

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr("compsde.cli.common.fcntl.flock", no_locks)
    assert main(["simulate", *SMALL, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and "cannot be locked" in err[0]
    assert (tmp_path / "result.json").is_file()


@pytest.mark.parametrize("command, args, flag", [
    ("simulate", ["--steps", "5", "--agents", str(2**70)], "--agents"),
    ("simulate", ["--steps", "5", "--runs", str(2**70)], "--runs"),
    ("sde", ["--steps", "5", "--runs", str(2**70)], "--runs"),
    ("demo", ["--runs", str(2**70)], "--runs"),
    ("validate", ["--steps", "5", "--lr-sweep", "--horizon", "1e308"], "--horizon"),
])
def test_the_time_is_blamed_on_the_flag_that_sets_it(command, args, flag, tmp_path,
                                                     monkeypatch, capsys):
    _forbid(monkeypatch, WORK[command][1])
    code = main([command, *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    _one_line_error(code, err, flag)
    assert err.startswith(f"error: {flag} ") and ("at least" in err or "forever" in err)
