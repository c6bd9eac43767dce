"""Every command that reads a data set checks it before any work: a missing one is one line
``error: …`` naming the data set and the command that installs it, exit 2, nothing computed and
nothing created."""

from __future__ import annotations

import pytest

from compsde.cli import main
from compsde.experiments import load_all

FASHION = "apt-get install dataset-fashion-mnist"
FORTUNES = "apt-get install fortunes"


class WorkStarted(AssertionError):
    """Raised by the patched work functions: the command started work before its checks."""


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """A machine without the Debian data packages: both default folders are absent."""
    monkeypatch.delenv("COMPSDE_FASHION_MNIST", raising=False)
    monkeypatch.setattr("compsde.nn.data.FASHION_MNIST_DIR", str(tmp_path / "no-fashion"))
    monkeypatch.setattr("compsde.nn.text.FORTUNES_DIR", str(tmp_path / "no-fortunes"))


def _forbid(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    def work(*args, **kwargs):
        raise WorkStarted(target)
    monkeypatch.setattr(target, work)


def _forbid_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, figure in load_all().items():
        def work(*args, _name=name, **kwargs):
            raise WorkStarted(_name)
        monkeypatch.setattr(figure, "runner", work)


def _refused(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


@pytest.mark.parametrize(("figure", "needles"), [
    ("fig1", ("Fashion-MNIST", FASHION)),
    ("fig2", ("Fashion-MNIST", FASHION)),
    ("fig4", ("Fashion-MNIST", FASHION)),
    ("lm", ("Fashion-MNIST", "English text", "apt-get install dataset-fashion-mnist fortunes")),
    ("all", ("Fashion-MNIST", "English text", "apt-get install dataset-fashion-mnist fortunes")),
])
def test_reproduce_checks_its_data_before_any_work(figure, needles, no_data, tmp_path,
                                                   monkeypatch, capsys):
    _forbid_figures(monkeypatch)
    _forbid(monkeypatch, "compsde.experiments.fig1.panel_mean")   # fig1's first panel
    out = tmp_path / "out"
    code = main(["reproduce", figure, "--quick", "--out", str(out), "--no-progress"])
    _refused(code, capsys.readouterr().err, *needles)
    assert not out.exists()                                        # nothing created


def test_reproduce_lm_names_only_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("compsde.nn.text.FORTUNES_DIR", str(tmp_path / "no-fortunes"))
    monkeypatch.setenv("COMPSDE_FASHION_MNIST", str(tmp_path / "fashion"))
    from compsde.nn.data import _FASHION_FILES

    (tmp_path / "fashion").mkdir()
    for name in (f for files in _FASHION_FILES.values() for f in files):
        (tmp_path / "fashion" / name).write_bytes(b"")
    _forbid_figures(monkeypatch)
    code = main(["reproduce", "lm", "--out", str(tmp_path / "out"), "--no-progress"])
    line = _refused(code, capsys.readouterr().err, "English text", FORTUNES)
    assert "Fashion-MNIST" not in line


def test_figures_without_data_sets_still_run(no_data, tmp_path, monkeypatch, capsys):
    """fig3 reads no data set: the check lets it through to its work."""
    _forbid_figures(monkeypatch)
    with pytest.raises(WorkStarted, match="fig3"):
        main(["reproduce", "fig3", "--out", str(tmp_path / "out"), "--no-progress"])


def test_the_api_checks_before_panel_a(no_data, tmp_path, monkeypatch):
    """`Figure.run` and fig1's own build refuse before the first panel starts."""
    from compsde.experiments import fig1
    from compsde.nn.data import DatasetNotAvailable

    _forbid(monkeypatch, "compsde.experiments.fig1.panel_mean")
    with pytest.raises(DatasetNotAvailable, match=FASHION):
        load_all()["fig1"].run(tmp_path / "api")
    with pytest.raises(DatasetNotAvailable, match=FASHION):
        fig1.build("test")
    assert not (tmp_path / "api").exists()


@pytest.mark.parametrize(("data", "needles"), [
    ("fashion-mnist", ("Fashion-MNIST", FASHION)),
    ("text", ("English text", FORTUNES)),
])
def test_advise_checks_its_data_before_measuring(data, needles, no_data, tmp_path,
                                                 monkeypatch, capsys):
    _forbid(monkeypatch, "compsde.cli.advise_cmd.measure_dataset")
    out = tmp_path / "out"
    code = main(["advise", "--model", "gpt" if data == "text" else "mlp", "--data", data,
                 "--out", str(out)])
    _refused(code, capsys.readouterr().err, *needles)
    assert not out.exists()


@pytest.mark.parametrize(("data", "needles"), [
    (None, ("Fashion-MNIST", FASHION)),                          # train's default data set
    ("text", ("English text", FORTUNES)),
])
def test_train_checks_its_data_before_training(data, needles, no_data, tmp_path, monkeypatch,
                                               capsys):
    _forbid(monkeypatch, "compsde.distributed.runner._run_simulated")
    _forbid(monkeypatch, "compsde.distributed.runner._run_distributed")
    args = ["train", "--simulate-agents", "2", "--steps", "2", "--out", str(tmp_path / "out")]
    if data is not None:
        args += ["--model", "gpt:size=tiny", "--data", data]
    _refused(main(args), capsys.readouterr().err, *needles)
