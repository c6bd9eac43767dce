"""Bit packing for the wire: sign bits and b-bit unsigned codes in ``uint8`` bytes.

Layout: bits are written most-significant-bit first (as ``numpy.packbits``), codes one after the
other with their most significant bit first, and the last byte is padded with zero bits. ``n``
bits take ``ceil(n / 8)`` bytes; ``n`` codes of ``width`` bits take ``ceil(n · width / 8)``.

On CPU the sign hot paths run the compiled kernels of :mod:`.native` when they are available
(one pass each); otherwise NumPy (``greater_equal`` into a reused per-thread buffer, then
``packbits``; fresh multi-megabyte buffers would cost several times a memory copy in page
faults), and unpacking gathers rows of a 256 × 8 lookup table indexed by the packed bytes.
Other devices use plain torch ops.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int
from . import native

__all__ = ["pack_bits", "pack_codes", "pack_signs", "packed_nbytes", "unpack_bits",
           "unpack_codes", "unpack_signs"]

_MAX_CACHED = 4  # buffers kept per thread


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.store: dict[tuple[str, int], np.ndarray] = {}


_buffers = _Buffers()
_luts: dict[tuple[torch.dtype, torch.device], Tensor] = {}
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def _buffer(kind: str, n: int, dtype: type) -> np.ndarray:
    """A reusable per-thread NumPy buffer of ``n`` elements (contents undefined)."""
    store = _buffers.store
    key = (kind, n)
    buf = store.get(key)
    if buf is None:
        if len(store) >= _MAX_CACHED:
            store.pop(next(iter(store)))
        buf = store[key] = np.empty(n, dtype=dtype)
    return buf


def _shifts(width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.arange(width - 1, -1, -1, device=device, dtype=dtype)


def packed_nbytes(n: int, width: int = 1) -> int:
    """Bytes needed for ``n`` codes of ``width`` bits: ``ceil(n · width / 8)``."""
    return (n * width + 7) // 8


def _check_packed(packed: Tensor, n: int, width: int) -> None:
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError("packed must be a 1-D uint8 tensor")
    if packed.numel() != packed_nbytes(n, width):
        raise ValueError(f"packed must hold {packed_nbytes(n, width)} bytes for n={n} "
                         f"codes of width {width}, got {packed.numel()}")


def pack_bits(bits: Tensor) -> Tensor:
    """Pack a bool (or 0/1) tensor, flattened, into ``ceil(n/8)`` bytes, MSB first."""
    flat = bits.reshape(-1)
    if flat.dtype != torch.bool:
        flat = flat != 0
    if flat.device.type == "cpu":
        return torch.from_numpy(np.packbits(flat.numpy()))
    return _pack_bits_torch(flat)


def _pack_bits_torch(flat: Tensor) -> Tensor:
    """:func:`pack_bits` with torch ops only (any device) for a flat bool tensor."""
    n = flat.numel()
    nbytes = packed_nbytes(n)
    padded = torch.zeros(nbytes * 8, dtype=torch.int32, device=flat.device)
    padded[:n] = flat
    weights = torch.bitwise_left_shift(1, _shifts(8, flat.device, torch.int32))
    return (padded.view(nbytes, 8) * weights).sum(1).to(torch.uint8)


def unpack_bits(packed: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack_bits`: the first ``n`` bits as a bool tensor."""
    n = check_int("n", n, minimum=0)
    _check_packed(packed, n, 1)
    if packed.device.type == "cpu":
        unpacked = np.unpackbits(packed.numpy(), count=n)
        return torch.from_numpy(unpacked.view(np.bool_))
    return _unpack_bits_torch(packed, n)


def _unpack_bits_torch(packed: Tensor, n: int) -> Tensor:
    """:func:`unpack_bits` with torch ops only (any device)."""
    bits = (packed.unsqueeze(1) >> _shifts(8, packed.device, torch.uint8)) & 1
    return bits.reshape(-1)[:n].bool()


def pack_signs(x: Tensor) -> Tensor:
    """Pack ``x ≥ 0`` (1 = non-negative, so sign(0) = +1; NaN gives 0) into bytes, MSB first."""
    flat = x.detach().reshape(-1)
    if flat.device.type == "cpu" and flat.dtype in _NUMPY_FLOATS:
        out = torch.empty(packed_nbytes(flat.numel()), dtype=torch.uint8)
        if native.pack_signs(flat, out):
            return out
        values = flat.contiguous().numpy()
        mask = _buffer("signs", values.size, np.bool_)
        np.greater_equal(values, 0, out=mask)
        return torch.from_numpy(np.packbits(mask))
    return pack_bits(flat >= 0)


def _sign_lut(dtype: torch.dtype, device: torch.device) -> Tensor:
    """Row ``b`` holds the 8 values ±1 encoded by byte ``b`` (bit 1 → +1), MSB first."""
    key = (dtype, device)
    lut = _luts.get(key)
    if lut is None:
        codes = torch.arange(256, dtype=torch.int32).unsqueeze(1)
        bits = (codes >> _shifts(8, torch.device("cpu"), torch.int32)) & 1
        lut = _luts[key] = (bits * 2 - 1).to(dtype=dtype, device=device).contiguous()
    return lut


def unpack_signs(packed: Tensor, n: int, dtype: torch.dtype = torch.float32, *,
                 out: Tensor | None = None) -> Tensor:
    """Inverse of :func:`pack_signs`: ``n`` values in {−1, +1} of ``dtype``, into ``out`` if given.

    ``out`` must be a contiguous ``(n,)`` tensor of ``dtype`` on the device of ``packed``.
    """
    n = check_int("n", n, minimum=0)
    _check_packed(packed, n, 1)
    if out is None:
        out = torch.empty(n, dtype=dtype, device=packed.device)
    elif out.shape != (n,) or out.dtype != dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous ({n},) {dtype} tensor")
    if n and native.mean_from_rows(packed.view(1, -1), 1, out):     # c·(2/1) − 1 = ±1
        return out
    lut = _sign_lut(dtype, packed.device)
    full, rem = divmod(n, 8)
    if full:
        index = packed[:full].to(torch.int32)
        head = out[: 8 * full]
        if (head.storage_offset() * head.element_size()) % 8 == 0:
            # Each byte expands to 8 · element_size bytes: move them as int64 words.
            wide = lut.view(torch.int64)
            torch.index_select(wide, 0, index, out=head.view(torch.int64).view(full, -1))
        else:
            torch.index_select(lut, 0, index, out=head.view(full, 8))
    if rem:
        out[8 * full:] = lut[packed[full].long(), :rem]
    return out


def pack_codes(codes: Tensor, width: int) -> Tensor:
    """Pack unsigned integer ``codes`` (each < 2**width) into bytes, each code MSB first."""
    width = check_int("width", width, minimum=1, maximum=62)
    flat = codes.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << width):
        raise ValueError(f"codes must lie in [0, {(1 << width) - 1}] for width {width}")
    bits = (flat.unsqueeze(1) >> _shifts(width, flat.device, torch.int64)) & 1
    return pack_bits(bits.bool())


def unpack_codes(packed: Tensor, n: int, width: int) -> Tensor:
    """Inverse of :func:`pack_codes`: ``n`` codes of ``width`` bits as int64."""
    width = check_int("width", width, minimum=1, maximum=62)
    n = check_int("n", n, minimum=0)
    _check_packed(packed, n, width)
    bits = unpack_bits(packed, n * width).view(n, width).to(torch.int64)
    return (bits << _shifts(width, packed.device, torch.int64)).sum(1)
