import gzip

import numpy as np
import pytest

from taskdistill.data.idx import read_idx
from taskdistill.errors import DataError


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_reads_plain_and_gzipped(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(arr))
    with gzip.open(tmp_path / "b-idx3-ubyte.gz", "wb") as f:
        f.write(idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), arr)
    assert np.array_equal(read_idx(tmp_path / "b-idx3-ubyte.gz"), arr)


def test_truncated_and_bad_magic_name_the_file(tmp_path):
    arr = np.zeros((4, 5), dtype=np.uint8)
    p = tmp_path / "t-idx2-ubyte"
    p.write_bytes(idx_bytes(arr)[:-3])
    with pytest.raises(DataError, match="t-idx2-ubyte' is truncated"):
        read_idx(p)
    q = tmp_path / "junk"
    q.write_bytes(b"hello world")
    with pytest.raises(DataError, match="junk' is not an IDX file"):
        read_idx(q)
