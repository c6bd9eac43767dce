"""`make setup` (behind `make demo` and `make test`) brings the Debian data packages the tests
and figures read, or stops before creating anything with one line naming them and the command;
CI runs the README's test command only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from compsde.nn.data import DATA_PACKAGES, FASHION_MNIST_DIR
from compsde.nn.text import FORTUNES_DIR

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def absent(tmp_path: Path) -> str:
    """DATA_FILES as on a machine where neither package was installed."""
    return (f"DATA_FILES=dataset-fashion-mnist={tmp_path}/fm/x.gz "
            f"fortunes={tmp_path}/fortunes/computers")


def test_the_makefile_checks_the_files_the_library_reads():
    text = (ROOT / "Makefile").read_text()
    assert f"dataset-fashion-mnist={FASHION_MNIST_DIR}/" in text
    assert f"fortunes={FORTUNES_DIR}/" in text
    assert set(DATA_PACKAGES.values()) == {"dataset-fashion-mnist", "fortunes"}


def test_without_root_or_sudo_setup_stops_first_with_one_line(tmp_path):
    venv = tmp_path / "venv"
    done = make("setup", absent(tmp_path), "CAN_INSTALL=", f"VENV={venv}")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "dataset-fashion-mnist fortunes" in lines[0]
    assert "sudo apt-get install -y dataset-fashion-mnist fortunes" in lines[0]
    assert not venv.exists() and not done.stdout.strip()          # nothing created or run


def test_only_the_missing_package_is_named(tmp_path):
    done = make("data", f"DATA_FILES=dataset-fashion-mnist={tmp_path}/x.gz fortunes="
                        f"{ROOT}/Makefile", "CAN_INSTALL=")
    assert done.returncode != 0 and "apt-get install -y dataset-fashion-mnist'" in done.stderr


@pytest.mark.parametrize(("can", "prefix"), [("root", ""), ("sudo", "sudo -n ")])
def test_root_or_passwordless_sudo_installs_the_missing_packages(can, prefix, tmp_path):
    done = make("-n", "data", absent(tmp_path), f"CAN_INSTALL={can}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    update = [i for i, line in enumerate(lines) if "apt-get update" in line]
    install = [i for i, line in enumerate(lines) if "apt-get install -y" in line]
    assert len(update) == 1 and len(install) == 1 and update[0] < install[0]   # update once
    assert lines[update[0]].startswith(f"{prefix}apt-get update")
    assert lines[install[0]].startswith(f"{prefix}env DEBIAN_FRONTEND=noninteractive")
    assert lines[install[0]].endswith("dataset-fashion-mnist fortunes")


def test_nothing_is_installed_when_the_data_is_there(tmp_path):
    present = f"DATA_FILES=dataset-fashion-mnist={ROOT}/Makefile fortunes={ROOT}/Makefile"
    done = make("-n", "data", present, "CAN_INSTALL=")
    assert done.returncode == 0 and "apt-get" not in done.stdout.replace(
        "missing after apt-get install", "")


def test_make_test_requires_the_data_and_ci_runs_only_make_test(tmp_path):
    stamp = tmp_path / "stamp"
    stamp.touch()                                   # newer than pyproject.toml: no install
    for target in ("test", "test-slow"):
        shown = make("-n", target, f"STAMP={stamp}").stdout
        assert "COMPSDE_REQUIRE_DATA=1" in shown and "pytest" in shown
    assert "-m slow" in make("-n", "test-slow", f"STAMP={stamp}").stdout
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in ci and not any("apt-get" in line for line in ci)


def test_without_apt_get_setup_stops_with_one_line_even_as_root(tmp_path):
    """A machine that is not Debian-like: nothing is attempted, the line names the packages."""
    import shutil

    bin_dir = tmp_path / "bin"                      # make and id, but no apt-get
    bin_dir.mkdir()
    for tool in ("make", "id"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = subprocess.run([str(bin_dir / "make"), "--no-print-directory", "data",
                           absent(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": str(bin_dir)})
    assert done.returncode != 0 and not done.stdout.strip()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install -y dataset-fashion-mnist fortunes" in lines[0]
