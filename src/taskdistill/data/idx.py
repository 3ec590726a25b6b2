"""Read the IDX files that MNIST-style datasets ship in (optionally gzipped)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from taskdistill.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Return the array stored in an IDX file (`.gz` or plain); raises DataError naming a bad file."""
    p = Path(path)
    try:
        raw = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file '{p}': {e}. Reinstall the dataset or pass another root.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"'{p}' is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"IDX file '{p}' is truncated: {len(raw) - header} bytes of data, expected {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
