"""A synthetic web-scale pool in the clip-retrieval layout, with the task's images planted where we know them.

`C` class centres (random unit vectors); `Q/C` queries per class around each centre (cosine ~0.7 to it); per
query `planted` task images around the query (cosine 0.74 .. 0.89); a share of them get a near-copy (cosine
~0.995: near-duplicates); `guard` test images per query-neighbourhood, each with a copy hidden in the pool (what
the leakage guard must catch); the rest is background: 90 % around 4096 random topics, 10 % distractors
around the class centres (cosine ~0.39 to a query). Written part by part (`part_rows` rows, float16 by default),
each part atomically, so memory stays at one sub-chunk whatever `n`:
    img_emb/img_emb_<p>.npy, metadata/metadata_<p>.parquet (columns key, caption), encoder.json ("synthetic"),
    truth.npz (queries, labels, guard vectors and every planted row), synthetic.json (parameters; written last)
With `shards=True` (tests only) every row also gets a tiny PNG in img2dataset-style tar shards `shards/<5 digits>.tar`
(`key` = 5-digit shard + 4-digit index, `shard_rows` = 10,000 per shard).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import numpy as np

from taskdistill.atomic import atomic_path, write_json
from taskdistill.errors import ConfigError
from taskdistill.progress import ProgressLine
from taskdistill.retrieval.clip_layout import EMB_DIR, ENCODER_FILE, META_DIR, clear_pool, require_pyarrow

FORMAT = "taskdistill-synthetic-pool/1"
SHARD_ROWS = 10_000
TOPICS = 4096
SUB = 262_144


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate (see the module doc)."""

    n: int
    dim: int = 512
    classes: int = 10
    queries_per_class: int = 50
    planted_per_query: int = 240
    dup_share: float = 0.05
    guard_per_query: int = 4
    part_rows: int = 1_000_000
    dtype: str = "float16"
    seed: int = 0
    shards: bool = False
    shard_rows: int = SHARD_ROWS


@dataclass
class SyntheticTruth:
    """Queries `[Q, D]` and labels `[Q]`, guard vectors `[G, D]`, and the planted rows: task images `[P]` with
    their query `[P]`, near-copies `[R]` of rows `[R]`, leaked copies `[L]` of guard rows `[L]`."""

    queries: np.ndarray
    labels: np.ndarray
    guard: np.ndarray
    planted_rows: np.ndarray
    planted_query: np.ndarray
    dup_rows: np.ndarray
    dup_of: np.ndarray
    leak_rows: np.ndarray
    leak_of: np.ndarray


def key_of(row: int, shard_rows: int = SHARD_ROWS) -> str:
    """img2dataset-style key: 5-digit shard number + 4-digit index in the shard."""
    return f"{row // shard_rows:05d}{row % shard_rows:04d}"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _around(rng: np.random.Generator, centres: np.ndarray, spread: np.ndarray | float) -> np.ndarray:
    """Unit vectors `centres + spread * g`, g ~ N(0, I / D) (so |g| ~ 1): cosine ~ 1 / sqrt(1 + spread^2)."""
    g = rng.standard_normal(centres.shape, dtype=np.float32) / np.sqrt(centres.shape[1], dtype=np.float32)
    return _unit(centres + np.asarray(spread, np.float32).reshape(-1, 1) * g)


def _truth(spec: SyntheticSpec) -> tuple[SyntheticTruth, np.ndarray, np.ndarray]:
    """The planted structure; also (special rows `[S]`, their vectors `[S, D]`)."""
    rng = np.random.default_rng([spec.seed, 1])
    d, c, qpc = spec.dim, spec.classes, spec.queries_per_class
    centres = _unit(rng.standard_normal((c, d), dtype=np.float32))
    labels = np.repeat(np.arange(c), qpc)
    queries = _around(rng, centres[labels], 1.0)
    nq = len(queries)
    p_query = np.repeat(np.arange(nq), spec.planted_per_query)
    planted = _around(rng, queries[p_query], rng.uniform(0.5, 0.9, len(p_query)))
    n_dup = int(round(spec.dup_share * len(planted)))
    dup_src = np.sort(rng.choice(len(planted), n_dup, replace=False))
    dups = _around(rng, planted[dup_src], 0.1)
    g_query = np.repeat(np.arange(nq), spec.guard_per_query)
    guard = _around(rng, queries[g_query], rng.uniform(0.5, 0.9, len(g_query)))
    leaks = _around(rng, guard, 0.1)
    special = len(planted) + n_dup + len(leaks)
    if special > spec.n // 2:
        raise ConfigError(f"a synthetic pool of {spec.n} rows cannot hold {special} planted rows; raise n or lower "
                          f"planted_per_query")
    rows = rng.choice(spec.n, special, replace=False)
    p_rows, d_rows, l_rows = np.split(rows, [len(planted), len(planted) + n_dup])
    truth = SyntheticTruth(queries, labels, guard, p_rows, p_query, d_rows, p_rows[dup_src], l_rows,
                           np.arange(len(guard)))
    return truth, rows, np.concatenate([planted, dups, leaks])


def _background(rng: np.random.Generator, n: int, topics: np.ndarray, centres: np.ndarray) -> np.ndarray:
    near_class = rng.random(n) < 0.1
    base = topics[rng.integers(0, len(topics), n)]
    base[near_class] = centres[rng.integers(0, len(centres), int(near_class.sum()))]
    return _around(rng, base, np.where(near_class, 1.5, 1.0).astype(np.float32))


def _png(rng: np.random.Generator) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _write_shards(out: Path, n: int, seed: int, shard_rows: int) -> None:
    rng = np.random.default_rng([seed, 3])
    for s0 in range(0, n, shard_rows):
        path = out / "shards" / f"{s0 // shard_rows:05d}.tar"
        with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
            for row in range(s0, min(s0 + shard_rows, n)):
                key = key_of(row, shard_rows)
                for name, data in ((f"{key}.png", _png(rng)),
                                   (f"{key}.json", json.dumps({"source": "synthetic"}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def load_truth(out: str | Path) -> SyntheticTruth:
    z = np.load(Path(out) / "truth.npz")
    return SyntheticTruth(**{k: z[k] for k in SyntheticTruth.__dataclass_fields__})


def write_synthetic_pool(out: str | Path, spec: SyntheticSpec, progress: bool = True) -> SyntheticTruth:
    """Generate the pool into `out` (see the module doc); a folder already holding this spec is kept as is."""
    pa, pq = __import__("pyarrow"), require_pyarrow()
    out = Path(out)
    stamp = out / "synthetic.json"
    if stamp.is_file():
        defaults = {f.name: f.default for f in fields(SyntheticSpec) if f.default is not MISSING}
        if {**defaults, **json.loads(stamp.read_text()).get("spec", {})} == asdict(spec):
            return load_truth(out)
    stamp.unlink(missing_ok=True)
    truth, special, special_vecs = _truth(spec)
    order = np.argsort(special)
    special, special_vecs = special[order], special_vecs[order]
    rng0 = np.random.default_rng([spec.seed, 2])
    topics = _unit(rng0.standard_normal((TOPICS, spec.dim), dtype=np.float32))
    centres = _unit(truth.queries.reshape(spec.classes, spec.queries_per_class, -1).mean(1))
    clear_pool(out)
    bar = ProgressLine(spec.n, "generate synthetic pool", "vec", enabled=progress)
    for p, p0 in enumerate(range(0, spec.n, spec.part_rows)):
        p1 = min(p0 + spec.part_rows, spec.n)
        emb_path = out / EMB_DIR / f"img_emb_{p}.npy"
        with atomic_path(emb_path) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=spec.dtype, shape=(p1 - p0, spec.dim))
            for s0 in range(p0, p1, SUB):
                s1 = min(s0 + SUB, p1)
                x = _background(np.random.default_rng([spec.seed, 4, s0]), s1 - s0, topics, centres)
                lo, hi = np.searchsorted(special, [s0, s1])
                x[special[lo:hi] - s0] = special_vecs[lo:hi]
                arr[s0 - p0:s1 - p0] = x
                bar.update(s1 - s0)
            arr.flush()
            del arr
        keys = [key_of(r, spec.shard_rows) for r in range(p0, p1)]
        table = pa.table({"key": keys, "caption": [""] * len(keys)})
        with atomic_path(out / META_DIR / f"metadata_{p}.parquet") as tmp:
            pq.write_table(table, tmp)
    bar.close()
    if spec.shards:
        _write_shards(out, spec.n, spec.seed, spec.shard_rows)
    write_json(out / ENCODER_FILE, {"encoder": "synthetic", "pretrained": False, "dim": spec.dim})
    with atomic_path(out / "truth.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **asdict(truth))
    write_json(stamp, {"format": FORMAT, "spec": asdict(spec)})
    return truth
