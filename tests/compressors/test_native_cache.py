"""The kernel cache and the settings of compsde.compressors.native: a damaged cache entry is
rebuilt with one warning line, bad settings are named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compsde.compressors import native

HAS_GCC = shutil.which("gcc") is not None
needs_gcc = pytest.mark.skipif(not HAS_GCC, reason="no C compiler on this machine")

# A sign round trip through the kernels (bitwise the torch path's answer), then the status.
ROUND_TRIP = """
import json, torch
from compsde.compressors import native
from compsde.compressors.bits import pack_signs, unpack_signs
x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
packed = pack_signs(x)
back = unpack_signs(packed, x.numel())
assert torch.equal(back, torch.where(x >= 0, 1.0, -1.0))
print(json.dumps(native.status()))
"""


def _run(cache: Path, **env: str) -> tuple[dict, list[str]]:
    """Status after a sign round trip in a fresh interpreter, and its stderr lines."""
    environ = {key: value for key, value in os.environ.items()
               if key not in ("CC", "COMPSDE_NATIVE")}
    environ.update(COMPSDE_CACHE_DIR=str(cache), **env)
    done = subprocess.run([sys.executable, "-c", ROUND_TRIP], env=environ, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr)
    return json.loads(done.stdout), done.stderr.splitlines()


def _other_library(folder: Path) -> bytes:
    """A valid shared library that is not the kernels."""
    source = folder / "other.c"
    source.write_text("int compsde_other(void) { return 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(folder / "other.so"), str(source)],
                   check=True, timeout=120)
    return (folder / "other.so").read_bytes()


def _damage(path: Path, how: str, scratch: Path) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(b"not a library\n" * 100)
    else:                                        # another library under the kernels' name
        path.write_bytes(_other_library(scratch))


@needs_gcc
@pytest.mark.parametrize("how", ["truncated", "garbage", "other library"])
def test_a_damaged_cache_entry_is_rebuilt_with_one_warning(tmp_path, how):
    cache = tmp_path / "cache"
    status, lines = _run(cache)
    assert status["available"] and lines == []
    path = Path(status["path"])
    good = path.read_bytes()
    _damage(path, how, tmp_path)
    status, lines = _run(cache)
    assert status["available"], status["reason"]
    assert len(lines) == 1 and str(path) in lines[0] and "rebuilding" in lines[0], lines
    assert Path(status["path"]) == path and path.read_bytes() != b"not a library\n" * 100
    assert path.stat().st_size == len(good)
    native._verify(path)                         # the new entry has its checksum file
    status, lines = _run(cache)                  # and is used from then on without a word
    assert status["available"] and lines == []


@needs_gcc
def test_a_library_without_the_kernels_symbols_is_rebuilt(tmp_path):
    """Even when its checksum file was rewritten to match, a library that lacks the kernels'
    functions is replaced (and the fresh build loaded, not the one already mapped)."""
    cache = tmp_path / "cache"
    status, _ = _run(cache)
    path = Path(status["path"])
    other = _other_library(tmp_path)
    path.write_bytes(other)
    native._checksum_path(path).write_text(native._digest(other))
    status, lines = _run(cache)
    assert status["available"] and status["avx512"] in (True, False), status["reason"]
    assert len(lines) == 1 and "lacks compsde_sign_pack_shards" in lines[0], lines
    native._verify(path)
    assert path.read_bytes() != other
    assert sorted(p.name for p in cache.iterdir()) == [path.name, path.name + ".sha256"]


@needs_gcc
def test_an_entry_without_its_checksum_file_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    status, _ = _run(cache)
    native._checksum_path(Path(status["path"])).unlink()
    status, lines = _run(cache)
    assert status["available"] and len(lines) == 1 and "no checksum file" in lines[0], lines


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_an_unknown_compsde_native_is_refused(monkeypatch, value):
    monkeypatch.setenv("COMPSDE_NATIVE", value)
    monkeypatch.setattr(native, "_state", {})
    with pytest.raises(ValueError, match="COMPSDE_NATIVE") as info:
        native.library()
    assert repr(value) in str(info.value)
    for allowed in (*native._ON, *native._OFF):
        assert allowed in str(info.value)


@pytest.mark.parametrize(("value", "on"), [("", True), ("1", True), (" On ", True),
                                           ("TRUE", True), ("0", False), ("off", False),
                                           ("No", False), ("false", False)])
def test_the_values_compsde_native_takes(monkeypatch, value, on):
    monkeypatch.setenv("COMPSDE_NATIVE", value)
    assert native.enabled() is on


@needs_gcc
def test_a_compiler_command_with_flags_is_split_like_a_shell_would(tmp_path):
    status, lines = _run(tmp_path, CC="gcc -O0 -DCOMPSDE_UNUSED='1 2'")
    assert status["available"], status["reason"]
    assert "gcc -O0 -DCOMPSDE_UNUSED=1 2" in status["reason"] and lines == []


@pytest.mark.parametrize(("cc", "says"), [
    ("no-such-compiler-xyz -O2", "no program 'no-such-compiler-xyz' found on PATH"),
    ("gcc '-O2", "cannot be split into a command"),
])
def test_an_unusable_compiler_command_says_what_is_wrong(tmp_path, cc, says):
    status, lines = _run(tmp_path, CC=cc)
    assert not status["available"]
    assert says in status["reason"] and repr(cc) in status["reason"]
    assert len(lines) == 1 and says in lines[0] and "torch code" in lines[0], lines
    assert not list(tmp_path.glob("*.so"))
