"""The image store: decoded once and reopened, rebuilt after a crash or damage, invalidated by a changed file,
built once when two processes ask together, and a clean error when the disk is full."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import taskdistill.data.image_store as image_store
import taskdistill.data.store_decode as store_decode
from taskdistill.data.decode import DecodePolicy
from taskdistill.data.image_store import list_stores, open_store, read_store, stat_sources, verify_store
from taskdistill.data.sources import decode_image
from taskdistill.data.stored_sets import StoreOptions, load_image_files, store_rows
from taskdistill.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def write_images(folder: Path, n: int, size: int = 12, seed: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size + i % 3, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def expected(paths: list[str], policy: DecodePolicy) -> torch.Tensor:
    return torch.stack([decode_image(p, policy) for p in paths])


def load(paths: list[str], root: Path, policy: DecodePolicy, on_bad: str = "fail", workers: int = 1):
    return load_image_files(paths, [0] * len(paths), paths, ["a"], policy, on_bad,  # type: ignore[arg-type]
                            StoreOptions(root, workers, progress=False), "test images")


def test_built_once_then_reopened_without_decoding(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img", 20)
    policy = DecodePolicy(8)
    first = load(paths, tmp_path / "stores", policy)
    assert torch.equal(first.images.tensor(), expected(paths, policy)) and first.policy == policy

    def no_decoding(*a, **k):
        raise AssertionError("a complete store must not be decoded again")

    monkeypatch.setattr(store_decode, "decode_chunk", no_decoding)
    again = load(paths, tmp_path / "stores", policy)
    assert again.content_hash() == first.content_hash()
    assert torch.equal(again.images[[3, 1]], first.images[[3, 1]])
    assert len(list_stores(tmp_path / "stores")[0]) == 1


def test_parallel_decode_writes_the_same_store_as_one_process(tmp_path):
    paths = write_images(tmp_path / "img", 600, size=10)
    policy = DecodePolicy(8)
    one = load(paths, tmp_path / "one", policy, workers=1)
    two = load(paths, tmp_path / "two", policy, workers=2)
    assert read_store(two.images.array.path.parent).workers == 2
    assert (tmp_path / "one").joinpath(one.images.array.key, "pixels.npy").read_bytes() == \
        (tmp_path / "two").joinpath(two.images.array.key, "pixels.npy").read_bytes()


def test_a_changed_source_file_invalidates_the_store(tmp_path, capsys):
    paths = write_images(tmp_path / "img", 6)
    policy = DecodePolicy(8)
    before = load(paths, tmp_path / "stores", policy)
    Image.fromarray(np.full((12, 12, 3), 77, dtype=np.uint8)).save(paths[2])
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after = load(paths, tmp_path / "stores", policy)
    assert after.images.array.key != before.images.array.key
    assert (after.images[2] == 77).all() and torch.equal(after.images[0], before.images[0])
    assert "changed since" in capsys.readouterr().err


def test_half_written_and_damaged_stores_are_rebuilt(tmp_path, capsys):
    paths = write_images(tmp_path / "img", 6)
    policy = DecodePolicy(8)
    root = tmp_path / "stores"
    sources = stat_sources(paths)
    key = image_store.store_key(policy, sources)
    (root / f"{key}.partial").mkdir(parents=True)
    (root / f"{key}.partial" / "pixels.npy").write_bytes(b"\x93NUMPY half")
    info = open_store(sources, policy, root, 1, progress=False)
    assert "half-written" in capsys.readouterr().err and not (root / f"{key}.partial").exists()
    good = info.pixels_path.read_bytes()
    with open(info.pixels_path, "r+b") as f:  # truncated, as by a full disk or a bad copy
        f.truncate(len(good) - 5)
    info = open_store(sources, policy, root, 1, progress=False)
    assert "damaged" in capsys.readouterr().err and info.pixels_path.read_bytes() == good
    (info.path / "index.json").write_text("{}")
    open_store(sources, policy, root, 1, progress=False)
    assert "index.json does not match its checksum" in capsys.readouterr().err


SLOW_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import taskdistill.data.store_decode as sd
    from taskdistill.data.decode import DecodePolicy
    from taskdistill.data.image_store import open_store, stat_sources
    real = sd.decode_array
    def slow(*a, **k):
        time.sleep(float(sys.argv[3]))
        return real(*a, **k)
    sd.decode_array = slow
    paths = sorted(str(p) for p in Path(sys.argv[1]).glob("*.png"))
    info = open_store(stat_sources(paths), DecodePolicy(8), Path(sys.argv[2]), workers=1, progress=False)
    print("KEY", info.key, flush=True)
""")


def spawn_build(img: Path, root: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(img), str(root), str(delay)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_build_killed_mid_way_is_detected_and_rebuilt(tmp_path, capsys):
    paths = write_images(tmp_path / "img", 300, size=10)
    root = tmp_path / "stores"
    proc = spawn_build(tmp_path / "img", root, 0.02)  # about 6 s of decoding
    deadline = time.monotonic() + 60
    while not list(root.glob("*.partial/pixels.npy")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(root.glob("*.partial")) and not list(root.glob("*/store.json"))
    got = load(paths, root, DecodePolicy(8))
    assert "half-written" in capsys.readouterr().err
    assert torch.equal(got.images.tensor(), expected(paths, DecodePolicy(8)))


def test_two_processes_building_the_same_store_end_with_one_correct_store(tmp_path):
    paths = write_images(tmp_path / "img", 80, size=10)
    root = tmp_path / "stores"
    procs = [spawn_build(tmp_path / "img", root, 0.01) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    keys = {line.split()[1] for out, _ in outs for line in out.splitlines() if line.startswith("KEY")}
    assert len(keys) == 1
    assert sum("waiting for another process" in err for _, err in outs) == 1  # one built, the other waited
    assert [p.name for p in root.iterdir() if p.is_dir()] == [keys.pop()]
    got = load(sorted(paths), root, DecodePolicy(8))
    assert torch.equal(got.images.tensor(), expected(sorted(paths), DecodePolicy(8)))


def test_not_enough_disk_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img", 4)
    root = tmp_path / "stores"

    class Usage:
        free = 1000

    monkeypatch.setattr(image_store.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(DataError, match=rf"not enough disk space for an image store in '{root}': it needs"):
        load(paths, root, DecodePolicy(8))
    assert [p for p in root.iterdir() if p.is_dir()] == []


def test_disk_filling_up_during_the_build_removes_the_partial_store(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img", 4)
    root = tmp_path / "stores"

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_store.os, "posix_fallocate", full)
    with pytest.raises(DataError, match=r"filled up .* needs 768 B, 768 bytes\); the partial store was removed"):
        load(paths, root, DecodePolicy(8))
    assert [p for p in root.iterdir() if p.is_dir()] == []


def test_unwritable_store_folder_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"image store folder '.*file/stores' is not writable.*data.store_dir"):
        load(write_images(tmp_path / "img", 2), tmp_path / "file" / "stores", DecodePolicy(8))


def test_every_bad_file_is_listed_at_once_and_skip_reuses_the_store(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img", 8)
    Path(paths[1]).write_text("not an image")
    Path(paths[5]).write_bytes(Path(paths[4]).read_bytes()[:40])
    missing = str(tmp_path / "img" / "gone.png")
    with pytest.raises(DataError, match=r"(?s)3 unreadable or missing.*0001\.png.*0005\.png.*gone\.png.*skip"):
        load([*paths, missing], tmp_path / "stores", DecodePolicy(8))
    monkeypatch.setattr(store_decode, "decode_chunk", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    got = load([*paths, missing], tmp_path / "stores", DecodePolicy(8), on_bad="skip")
    assert got.ids == [p for i, p in enumerate(paths) if i not in (1, 5)]
    assert got.skipped == [paths[1], paths[5], missing]
    assert torch.equal(got.images[[0]], expected(paths[:1], DecodePolicy(8)))


def test_verify_finds_a_changed_byte_and_gray_stores_one_channel(tmp_path):
    paths = write_images(tmp_path / "img", 5)
    info = open_store(stat_sources(paths), DecodePolicy(8, color="gray"), tmp_path / "stores", 1, progress=False)
    assert info.shape == (5, 1, 8, 8) and verify_store(info) == []
    assert store_rows(info).shape == (5, 1, 8, 8)
    with open(info.pixels_path, "r+b") as f:
        f.seek(info.pixels_offset + 3 * 64 + 10)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert verify_store(info) == [3]
    meta = json.loads((info.path / "store.json").read_text())
    assert meta["policy"]["color"] == "gray" and meta["num_images"] == 5


def test_workers_do_not_rerun_a_script_without_a_main_guard(tmp_path):
    """Decode workers are fresh interpreters of this package, not multiprocessing children that re-import the
    caller's script: a script with no `if __name__ == "__main__"` guard builds its store once."""
    write_images(tmp_path / "img", 300, size=10)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from taskdistill.data.decode import DecodePolicy
        from taskdistill.data.image_store import open_store, stat_sources
        print("SCRIPT RAN", flush=True)
        paths = sorted(str(p) for p in Path({str(tmp_path / "img")!r}).glob("*.png"))
        info = open_store(stat_sources(paths), DecodePolicy(8), Path({str(tmp_path / "stores")!r}), workers=2,
                          progress=False)
        print("WORKERS", info.workers, len(info.bad))
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("SCRIPT RAN") == 1 and "WORKERS 2 0" in proc.stdout


def test_two_replies_arriving_together_are_both_read(tmp_path):
    """A worker that answers two chunks in one write: both replies come out of one wait (a buffered readline
    once kept the second in Python's buffer, invisible to select, and the build hung)."""
    import selectors

    reply = '{"rows": [%d], "crcs": [0], "bad": {}, "rss_kb": 1}\n'
    script = f"import sys, time; sys.stdout.write({reply % 0!r} + {reply % 1!r}); sys.stdout.flush(); time.sleep(30)"
    pool = store_decode._Workers.__new__(store_decode._Workers)
    pool.procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   bufsize=0)]
    pool.depth, pool.busy, pool.pending_bytes = 2, [2], [bytearray()]
    pool.selector = selectors.DefaultSelector()
    pool.selector.register(pool.procs[0].stdout, selectors.EVENT_READ, 0)
    try:
        time.sleep(0.5)  # both lines are in the pipe before the first wait
        got = list(pool.replies())  # one wait: the second reply must not be left behind
        assert [r[0] for r in got] == [[0], [1]] and pool.pending == 0
    finally:
        pool.procs[0].kill()
        pool.close()
