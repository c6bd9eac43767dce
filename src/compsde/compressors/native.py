"""Compiled sign kernels (``sign_kernels.c``) of the sign compressor and DSignSGD's wires, with
the torch code as fallback.

The sign hot loops (pack ``x ≥ 0`` into bits, count the ranks' bits bit-sliced, turn the
counts back into ``count·(2/N) − 1``) take several passes over the bucket in torch/numpy; one
C loop does each in one pass (BENCHMARKS.md, "Compression on the wire", has the measurement).
The source is compiled on first use with the system C compiler (``$CC``, a command split as a
shell would, or ``cc``) into a cache folder (``$COMPSDE_CACHE_DIR``, else
``$XDG_CACHE_HOME/compsde``, else ``~/.cache/compsde``), keyed by the source, the flags and
the CPU, written atomically so that ranks starting together share one file, with a checksum
file (SHA-256 and size) verified before loading: a damaged entry (truncated, another library,
garbage) is rebuilt with one warning line on stderr. It is loaded with :mod:`ctypes`. Without
a compiler, or with ``COMPSDE_NATIVE=0`` (see :func:`enabled`), every function here returns
``False`` and the caller runs its torch code; :func:`status` says which path is in use. The
build for this CPU takes its AVX-512 paths where it has them, else its AVX2 paths, else byte
loops (:data:`BUILDS`, :func:`using`).

Decoding copies values from tables built in torch by the in-process simulation's arithmetic
(``count·(2/N) − 1`` in the output dtype, :meth:`compsde.methods.DSignSGD.direction`), so the
result is bitwise the same on every path (THEORY.md §2: the server mean of the signs).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..io import write_atomic

SOURCE = Path(__file__).with_name("sign_kernels.c")
HEADERS = (Path(__file__).with_name("sign_kernels_avx512.h"),
           Path(__file__).with_name("sign_kernels_avx2.h"))
TABLE_BITS = 4          # count planes decoded through group tables (16^b rows)
GROUP = 4               # coordinates per lookup in those tables (GROUP in sign_kernels.c)
LUT_COUNT_MAX = 255     # counts decoded one coordinate at a time through a 256-entry table
_ELEMENT_SIZES = {torch.float16: 2, torch.bfloat16: 2, torch.float32: 4, torch.float64: 8}
_PACKED_DTYPES = {torch.float32: 4, torch.float64: 8}
#: Flags of the builds :func:`using` selects: for this CPU (its AVX-512 paths where it has
#: them), the same without AVX-512 (the AVX2 paths), and without AVX2 (the byte loops).
BUILDS = {"native": ("-O3", "-march=native"),
          "avx2": ("-O3", "-march=native", "-mno-avx512f"),
          "bytes": ("-O3", "-march=native", "-mno-avx2")}
_FLAG_SETS = (BUILDS["native"], ("-O3",))
_BASE_FLAGS = ("-shared", "-fPIC", "-std=c99", "-ffp-contract=off")
_SYMBOLS = ("compsde_sign_pack_shards", "compsde_sign_count_planes", "compsde_sign_decode_planes",
            "compsde_sign_decode_rows", "compsde_sign_decode_lut", "compsde_sign_avx512",
            "compsde_sign_avx2")
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

_lock = threading.Lock()
_state: dict[str, Any] = {}
_builds: dict[str, dict[str, Any]] = {}
_tables: dict[tuple[int, int, torch.dtype], tuple[Tensor, Tensor | None]] = {}


class _BadEntry(Exception):
    """A cached library that fails verification (the message says how)."""


def _warn(message: str) -> None:
    """One line on stderr."""
    print(f"compsde: warning: {message}", file=sys.stderr, flush=True)


def enabled() -> bool:
    """``$COMPSDE_NATIVE``: unset, empty or one of 1/true/yes/on uses the kernels, 0/false/no/off
    the torch code (case-insensitive); anything else raises ``ValueError``."""
    value = os.environ.get("COMPSDE_NATIVE", "")
    word = value.strip().lower()
    if word in ("", *_ON):
        return True
    if word in _OFF:
        return False
    raise ValueError(f"COMPSDE_NATIVE must be one of {', '.join(_ON)} (compiled sign kernels) "
                     f"or {', '.join(_OFF)} (torch code), got {value!r}")


def _cache_dir() -> Path:
    if os.environ.get("COMPSDE_CACHE_DIR"):
        return Path(os.environ["COMPSDE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "compsde"


def _compiler() -> tuple[list[str] | None, str]:
    """The compiler command, or None and why: ``$CC`` when set (and only it; split as a shell
    would, so ``CC='gcc -O0'`` is gcc with that flag), else Python's own compiler, ``cc`` or
    ``gcc``."""
    cc = os.environ.get("CC", "")
    if cc.strip():
        try:
            words = shlex.split(cc)
        except ValueError as exc:
            return None, f"CC={cc!r} cannot be split into a command ({exc})"
        program = shutil.which(words[0])
        if program is None:
            return None, f"CC={cc!r}: no program {words[0]!r} found on PATH"
        return [program, *words[1:]], ""
    names = [(sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc"]
    for name in names:
        if name and shutil.which(name):
            return [str(shutil.which(name))], ""
    return None, "no C compiler found ($CC unset; cc and gcc not on PATH)"


def _cpu_key() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _checksum_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _digest(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()} {len(data)}"


def _verify(target: Path) -> None:
    """Raise :class:`_BadEntry` unless ``target`` has the size and SHA-256 its checksum file
    (written with it) records; checked before the library is mapped, since a truncated one
    faults (SIGBUS) when called."""
    try:
        recorded = _checksum_path(target).read_text().split()
    except OSError:
        raise _BadEntry("it has no checksum file") from None
    data = target.read_bytes()
    if len(recorded) != 2 or not recorded[1].isdigit():
        raise _BadEntry("its checksum file is unreadable")
    if int(recorded[1]) != len(data):
        raise _BadEntry(f"it has {len(data)} bytes, its checksum file says {recorded[1]}")
    if _digest(data) != " ".join(recorded):
        raise _BadEntry("its SHA-256 differs from its checksum file's")


def _build(compiler: list[str], flags: tuple[str, ...], folder: Path, *,
           rebuild: bool = False) -> Path:
    """Compile SOURCE with ``flags`` into ``folder`` unless a verified build is there (a damaged
    one is rebuilt, with one warning line). The checksum file is replaced before the library,
    both atomically, so ranks starting together share one verified pair."""
    source = b"\0".join(path.read_bytes() for path in (SOURCE, *HEADERS))
    key = hashlib.sha256(b"\0".join([source, " ".join(flags + _BASE_FLAGS).encode(),
                                     platform.machine().encode(), _cpu_key().encode(),
                                     "\0".join(compiler).encode()])).hexdigest()[:16]
    target = folder / f"sign_kernels-{key}.so"
    if target.exists() and not rebuild:
        try:
            _verify(target)
            return target
        except _BadEntry as exc:
            _warn(f"the cached sign kernels {target} are damaged ({exc}); rebuilding them")
    folder.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=target.name, suffix=".part", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run([*compiler, *flags, *_BASE_FLAGS, "-o", partial, str(SOURCE)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            first = (done.stderr.strip().splitlines() or ["no message"])[0]
            raise subprocess.SubprocessError(f"{' '.join(compiler)} exited with status "
                                             f"{done.returncode}: {first}")
        write_atomic(_checksum_path(target), _digest(Path(partial).read_bytes()).encode())
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    missing = [name for name in _SYMBOLS if not hasattr(lib, name)]
    if missing:
        raise _BadEntry(f"it lacks {', '.join(missing)}")
    rows, i64, i32 = ctypes.POINTER(ctypes.c_void_p), ctypes.c_int64, ctypes.c_int
    ptr = ctypes.c_void_p
    lib.compsde_sign_pack_shards.argtypes = [ptr, i64, i64, i32, i32, ptr, i64, i64]
    lib.compsde_sign_count_planes.argtypes = [rows, i32, i64, i32, ptr, i64]
    lib.compsde_sign_decode_planes.argtypes = [rows, i32, i64, ptr, ptr, i32, ptr]
    lib.compsde_sign_decode_rows.argtypes = [rows, i32, i32, i64, ptr, ptr, i32, ptr]
    lib.compsde_sign_decode_lut.argtypes = [rows, ptr, i32, i64, ptr, i32, ptr]
    lib.compsde_sign_avx512.argtypes = []
    lib.compsde_sign_avx2.argtypes = []
    return lib


def _open(compiler: list[str], flags: tuple[str, ...], folder: Path) -> tuple[ctypes.CDLL, Path]:
    """The verified library of ``flags`` in ``folder``; one that loads without the kernels'
    symbols is rebuilt and loaded afresh (under another name: the loader would hand back the
    library already loaded under the old one)."""
    path = _build(compiler, flags, folder)
    try:
        return _declare(ctypes.CDLL(str(path))), path
    except (OSError, _BadEntry) as exc:
        _warn(f"the cached sign kernels {path} are damaged ({exc}); rebuilding them")
    path = _build(compiler, flags, folder, rebuild=True)
    fresh = path.with_name(f"{path.stem}-{os.getpid()}-{threading.get_ident()}.so")
    shutil.copyfile(path, fresh)
    try:
        return _declare(ctypes.CDLL(str(fresh))), path
    finally:
        fresh.unlink(missing_ok=True)


def _load(flag_sets: tuple[tuple[str, ...], ...] | None = None) -> dict[str, Any]:
    """The library (or None) and why, built with the first of ``flag_sets`` that works."""
    if not enabled():
        return {"lib": None, "reason": "disabled by COMPSDE_NATIVE="
                                       + os.environ.get("COMPSDE_NATIVE", "")}
    compiler, why = _compiler()
    if compiler is None:
        if os.environ.get("CC", "").strip():
            _warn(f"{why}; the sign kernels run as torch code")
        return {"lib": None, "reason": why}
    folders = [_cache_dir(), Path(tempfile.gettempdir()) / f"compsde-{os.getuid()}"]
    errors = []
    for flags in flag_sets or _FLAG_SETS:
        for folder in folders:
            try:
                lib, path = _open(compiler, flags, folder)
            except (OSError, subprocess.SubprocessError, _BadEntry) as exc:
                errors.append(f"{' '.join(flags)} in {folder}: {exc}")
                continue
            return {"lib": lib, "reason": f"compiled with {' '.join(compiler)} {' '.join(flags)}",
                    "path": str(path), "native_arch": "-march=native" in flags}
    reason = "compiling sign_kernels.c failed: " + "; ".join(errors)
    if os.environ.get("CC", "").strip():
        _warn(f"with CC={os.environ['CC']!r}, {reason}; the sign kernels run as torch code")
    return {"lib": None, "reason": reason}


def library() -> ctypes.CDLL | None:
    """The loaded kernels, compiled on the first call; None when unavailable. Raises
    ``ValueError`` for a ``$COMPSDE_NATIVE`` that is not one of the values :func:`enabled`
    lists."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state.update(_load())
    return _state["lib"]


def status() -> dict[str, Any]:
    """Whether the kernels are in use, and why (or why not); ``avx512`` / ``avx2``: whether the
    loaded build has its AVX-512 paths, or (only without those) its AVX2 paths."""
    lib = library()
    return {"available": lib is not None, "reason": _state.get("reason"),
            "path": _state.get("path"), "native_arch": _state.get("native_arch", False),
            "avx512": lib is not None and bool(lib.compsde_sign_avx512()),
            "avx2": lib is not None and bool(lib.compsde_sign_avx2())}


@contextmanager
def using(build: str) -> Iterator[dict[str, Any]]:
    """Inside the block, run the kernels of ``build`` (a key of :data:`BUILDS`, compiled on
    first use) or, with ``"torch"``, the torch code; yields :func:`status` of that choice. For
    benchmarks and tests that compare builds in one process; not thread-safe."""
    global _state
    if build != "torch" and build not in BUILDS:
        raise ValueError(f"build must be one of {', '.join(BUILDS)} or torch, got {build!r}")
    if build not in _builds:
        with _lock:
            _builds[build] = ({"lib": None, "reason": "the torch code (chosen)"}
                              if build == "torch" else _load((BUILDS[build],)))
    saved, _state = _state, _builds[build]
    try:
        yield status()
    finally:
        _state = saved


# -- tables ---------------------------------------------------------------------------------
def _tables_for(world: int, bits: int, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """``lut[c] = c·(2/N) − 1`` (256 values, the simulation's arithmetic in ``dtype``) and, for
    ``bits ≤ 4``, the group table: row ``i`` holds the ``GROUP = 4`` values of the counts whose
    planes' 4-bit pieces (plane 0 most significant) concatenate to ``i``."""
    key = (world, bits, dtype)
    found = _tables.get(key)
    if found is not None:
        return found
    lut = torch.arange(LUT_COUNT_MAX + 1, dtype=torch.int64).to(dtype)
    lut = lut.mul_(2.0 / world).sub_(1.0).contiguous()
    table = None
    if bits <= TABLE_BITS:
        g = GROUP
        index = torch.arange(1 << (g * bits))
        counts = torch.zeros(index.numel(), g, dtype=torch.int64)
        for plane in range(bits):
            piece = (index >> (g * (bits - 1 - plane))) & ((1 << g) - 1)
            for e in range(g):
                counts[:, e] += ((piece >> (g - 1 - e)) & 1) << (bits - 1 - plane)
        table = lut[counts.clamp_(max=LUT_COUNT_MAX)].contiguous()
    _tables[key] = (lut, table)
    return lut, table


def _rows(matrix: Tensor) -> Any:
    """ctypes array of the row addresses of a 2-D uint8 tensor with contiguous rows."""
    base, step = matrix.data_ptr(), matrix.stride(0)
    return (ctypes.c_void_p * matrix.shape[0])(*[base + r * step
                                                 for r in range(matrix.shape[0])])


def _bytes_ok(matrix: Tensor) -> bool:
    return (matrix.device.type == "cpu" and matrix.dtype == torch.uint8 and matrix.dim() == 2
            and (matrix.shape[1] <= 1 or matrix.stride(1) == 1))


def _out_ok(out: Tensor) -> bool:
    return out.device.type == "cpu" and out.dtype in _ELEMENT_SIZES and out.is_contiguous()


# -- kernels --------------------------------------------------------------------------------
def pack_signs_checked(x: Tensor, out: Tensor) -> bool | None:
    """``out[k]`` = bits ``x[8k + e] ≥ 0`` (MSB first, bytes past ``⌈n/8⌉`` zeroed) in one
    pass that also tells whether every ``x`` is finite (the return value): one shard of
    :func:`pack_shards_checked`."""
    if not out.is_contiguous():
        return None
    return pack_shards_checked(x, x.numel(), out.view(1, -1))


def pack_shards_checked(x: Tensor, shard: int, out: Tensor) -> bool | None:
    """Row ``r`` of ``out`` (``(R, row_bytes)`` uint8, contiguous rows) = the sign bits of
    ``x[r·shard : (r+1)·shard]`` (the entries that exist), zero-padded; one pass over ``x``
    that also tells whether every entry is finite. None (nothing written) unless the kernels
    were built for this CPU (numpy's two passes are faster than a generic build)."""
    lib = library()
    if (lib is None or not _state.get("native_arch") or x.dtype not in _PACKED_DTYPES
            or x.device.type != "cpu" or not x.is_contiguous() or not _bytes_ok(out)
            or out.shape[1] < (shard + 7) // 8):
        return None
    code = lib.compsde_sign_pack_shards(x.data_ptr(), x.numel(), shard, out.shape[0],
                                        _PACKED_DTYPES[x.dtype], out.data_ptr(),
                                        out.stride(0), out.shape[1])
    return None if code < 0 else code == 0


def pack_signs(x: Tensor, out: Tensor) -> bool:
    """:func:`pack_signs_checked` without the finiteness answer: True if it packed."""
    return pack_signs_checked(x, out) is not None


def count_planes(rows: Tensor, bits: int, out: Tensor) -> bool:
    """``out`` (``(bits, nbytes)`` uint8, contiguous rows) = the bit planes of the number of
    set bits over the rows of ``rows`` (``(R, nbytes)``), R < 2^bits."""
    lib = library()
    if (lib is None or not _bytes_ok(rows) or not _bytes_ok(out) or out.shape[0] != bits
            or out.shape[1] != rows.shape[1] or not 1 <= bits <= 8
            or rows.shape[0] >= 1 << bits):
        return False
    return lib.compsde_sign_count_planes(_rows(rows), rows.shape[0], rows.shape[1], bits,
                                         out.data_ptr(), out.stride(0)) == 0


def mean_from_rows(rows: Tensor, world: int, out: Tensor) -> bool:
    """``out[i] = c_i·(2/N) − 1``, ``c_i`` the number of rows with bit ``i`` set (the bit
    all-gather's decode; ``R = N`` rows of ``⌈n/8⌉`` bytes, ``n = out.numel()``)."""
    lib = library()
    bits = max(1, rows.shape[0].bit_length()) if rows.dim() == 2 else 0
    if (lib is None or not _bytes_ok(rows) or not _out_ok(out) or bits > TABLE_BITS
            or rows.shape[1] * 8 < out.numel()):
        return False
    lut, table = _tables_for(world, bits, out.dtype)
    return lib.compsde_sign_decode_rows(_rows(rows), rows.shape[0], bits, out.numel(),
                                        table.data_ptr(), lut.data_ptr(),
                                        _ELEMENT_SIZES[out.dtype], out.data_ptr()) == 0


def mean_from_planes(planes: Tensor, world: int, out: Tensor) -> bool:
    """``out[i] = c_i·(2/N) − 1`` with ``c_i`` read from the ``(b, ⌈n/8⌉)`` count planes
    (the sign reduce-scatter's decode of one shard; ``n = out.numel()``, counts < 256)."""
    lib = library()
    if lib is None or not _bytes_ok(planes) or not _out_ok(out) or planes.shape[1] * 8 < \
            out.numel():
        return False
    bits = planes.shape[0]
    if not 1 <= bits <= 8:
        return False
    lut, table = _tables_for(world, bits, out.dtype)
    size = _ELEMENT_SIZES[out.dtype]
    if table is not None:
        return lib.compsde_sign_decode_planes(_rows(planes), bits, out.numel(),
                                              table.data_ptr(), lut.data_ptr(), size,
                                              out.data_ptr()) == 0
    weights = (ctypes.c_uint8 * bits)(*[1 << (bits - 1 - j) for j in range(bits)])
    return lib.compsde_sign_decode_lut(_rows(planes), weights, bits, out.numel(),
                                       lut.data_ptr(), size, out.data_ptr()) == 0
