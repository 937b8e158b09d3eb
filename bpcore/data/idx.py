"""A reader for IDX files, the format of the MNIST and Fashion-MNIST data sets.

An IDX file is a 4-byte magic number, then one big-endian ``uint32`` size per
dimension, then the data, row-major and big-endian. The magic number is two
zero bytes, a type code (``0x08`` unsigned byte, ``0x09`` signed byte, ``0x0B``
int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64) and the number of
dimensions. Files may be gzipped (``.gz``), as they are distributed.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["IDX_DTYPES", "parse_idx", "read_idx"]

#: IDX type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one (uncompressed) IDX file.

    Parameters
    ----------
    data : bytes
        The whole file.
    name : str
        What to call the file in error messages.

    Returns
    -------
    numpy.ndarray
        Of the shape stored in the header and the native-endian version of the
        stored dtype (``uint8`` for MNIST images and labels).

    Raises
    ------
    DataError
        If the magic number is wrong, the type code unknown, or the file is
        shorter or longer than its header says.

    Examples
    --------
    >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])).tolist()
    [7, 9]
    """
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(data)} bytes; the file is truncated)")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"{name}: not an IDX file (bad magic number 0x{data[:4].hex()}; IDX files start "
            "with two zero bytes). Is it an HTML error page or a different format?"
        )
    if code not in IDX_DTYPES:
        raise DataError(
            f"{name}: unknown IDX type code 0x{code:02x}; expected one of "
            + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{name}: truncated IDX header ({len(data)} bytes, the header of a {ndim}-D "
            f"array needs {header}); download the file again"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{name}: IDX file is {what}: {len(data)} bytes, but a {dtype.name} array of "
            f"shape {shape} needs {expected}; download the file again"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in ``.gz``).

    Parameters
    ----------
    path : str or path-like
        E.g. ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        ``(n, 28, 28)`` uint8 for MNIST images, ``(n,)`` uint8 for labels.

    Raises
    ------
    DataError
        If the file is missing, a bad gzip stream, or not a valid IDX file.
    """
    p = Path(path)
    try:
        if p.suffix == ".gz":
            with gzip.open(p, "rb") as f:
                data = f.read()
        else:
            data = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: no such file") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{p}: cannot read the file ({exc}); it may be truncated or not gzipped: "
            "download it again"
        ) from None
    return parse_idx(data, str(p))
