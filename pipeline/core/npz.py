""".npz / .npy files read with bounded memory and no pickle.

``np.load`` trusts a file: an .npz member's header decides how much it allocates, and a zip member may
decompress a thousand times over (a 3 MB zip bomb reached 3.2 GB of RSS before the network loader
refused it). Here every member's .npy header (format 1.0/2.0/3.0, at most 10,000 bytes, parsed as a
literal) is read first, its array size (shape x itemsize) is checked against what is left of the
budget, and only then are exactly that many bytes decompressed into a new array. Object arrays are
refused (they would need pickle). Every error is a :class:`NpzError` naming the file and the member.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

#: Default budget for all arrays of one file together (bytes, decompressed): 512 MiB.
MAX_NPZ_BYTES = 512 << 20
#: Most members an .npz may hold.
MAX_NPZ_MEMBERS = 100_000


class NpzError(ValueError):
    """An .npz/.npy file cannot be read: not an archive, a member that is not a plain array, or arrays
    larger than the budget. The message names the file (and the member)."""


def load_npz(path: str | Path, max_bytes: int = MAX_NPZ_BYTES) -> dict[str, np.ndarray]:
    """Every array of an .npz archive (``np.savez``/``savez_compressed``), by name (without ``.npy``),
    decompressing at most ``max_bytes`` of array data in total. Raises NpzError, or OSError when the file
    cannot be opened."""
    path = Path(path)
    with open(path, "rb") as handle:
        return _load_archive(handle, path, max_bytes)


def _load_archive(handle, path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(handle)
    except Exception as exc:  # BadZipFile, an unsupported zip version (NotImplementedError), a bad directory
        raise NpzError(f"{path}: not an .npz archive ({exc})") from None
    arrays: dict[str, np.ndarray] = {}
    left = max_bytes
    with archive:
        members = archive.infolist()
        if len(members) > MAX_NPZ_MEMBERS:
            raise NpzError(f"{path}: {len(members)} members, more than {MAX_NPZ_MEMBERS}")
        for member in members:
            name = member.filename
            if member.is_dir():
                continue
            key = name[:-4] if name.endswith(".npy") else name
            try:
                with archive.open(member) as handle:
                    arrays[key] = _read_array(handle, left, f"{path}: member {name!r}")
            except NpzError:
                raise
            except Exception as exc:  # zlib.error, lzma/bz2 errors, a CRC mismatch, encryption, a bad zip entry
                raise NpzError(f"{path}: member {name!r}: unreadable ({type(exc).__name__}: {exc})") from None
            left -= arrays[key].nbytes
    return arrays


def load_npy(path: str | Path, max_bytes: int = MAX_NPZ_BYTES) -> np.ndarray:
    """One array from an .npy file, at most ``max_bytes`` of data. Raises NpzError, or OSError."""
    path = Path(path)
    with open(path, "rb") as handle:
        return _read_array(handle, max_bytes, str(path))


def _read_array(handle, budget: int, where: str) -> np.ndarray:
    """The array behind an .npy header in ``handle``, refused before allocation when its data exceeds
    ``budget`` bytes."""
    try:
        version = np.lib.format.read_magic(handle)
    except ValueError as exc:
        raise NpzError(f"{where}: not a .npy array ({exc})") from None
    try:
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise NpzError(f"{where}: .npy format {version[0]}.{version[1]} (expected 1.0 or 2.0)")
    except NpzError:
        raise
    except Exception as exc:  # the header is a Python literal: tokenize, syntax, recursion and value errors
        raise NpzError(f"{where}: bad .npy header ({type(exc).__name__}: {exc})") from None
    if dtype.hasobject:
        raise NpzError(f"{where}: holds Python objects (dtype {dtype}); only plain arrays are read, never pickle")
    if dtype.kind == "c":
        raise NpzError(f"{where}: complex numbers (dtype {dtype}); spikeloop's files hold real arrays, and casting "
                       f"would silently drop the imaginary part")
    count = math.prod(shape)
    size = count * dtype.itemsize
    if size > budget:
        raise NpzError(f"{where}: array of shape {shape} ({dtype}) needs {size:,} bytes, more than the "
                       f"{max(budget, 0):,} left of the file's budget (a damaged header or a zip bomb?)")
    out = np.empty(count, dtype=dtype)
    view = memoryview(out.view(np.uint8))
    filled = 0
    while filled < size:
        n = handle.readinto(view[filled:])
        if not n:
            raise NpzError(f"{where}: truncated: {filled:,} of {size:,} data bytes")
        filled += n
    if fortran:
        return out.reshape(shape[::-1]).transpose()
    return out.reshape(shape)
