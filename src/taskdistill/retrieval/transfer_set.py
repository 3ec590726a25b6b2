"""From an embedding folder to a transfer-set manifest: queries, leakage guard, index, selection, files.

Writes `OUT/manifest.csv` (columns `id,source,score,query,location`; `location` is a path or
`shard.tar#key`, usable as `distill.transfer.source`) and `OUT/summary.json`, both atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskdistill.atomic import atomic_path, write_json, write_text
from taskdistill.config.schema import RunConfig
from taskdistill.data.image_set import ImageSet
from taskdistill.errors import ConfigError
from taskdistill.retrieval.curate import (
    DEFAULT_PROMPT,
    DupRule,
    GuardSet,
    Queries,
    guard_set,
    image_queries,
    leakage_flags,
    select,
    summarize,
    text_queries,
)
from taskdistill.retrieval.embed import Embeddings, EncoderSpec, build_encoder, load_embeddings
from taskdistill.retrieval.index import VectorIndex, build_index

MANIFEST_COLUMNS = ("id", "source", "score", "query", "location")


@dataclass
class CurateOptions:
    """How to curate: strategy, size, query views, seeds, index kind, text prompt and duplicate rules."""

    strategy: str
    n: int
    views: int = 4
    seed: int = 0
    task_source: str | None = None
    index_kind: str = "auto"
    prompt: str = DEFAULT_PROMPT
    leak_rule: DupRule = field(default_factory=DupRule)
    dedup_rule: DupRule | None = field(default_factory=DupRule)
    device: str = "cpu"
    batch_size: int = 256


def pool_index(folder: Path, emb: Embeddings, kind: str = "auto", seed: int = 0) -> tuple[VectorIndex, bool]:
    """The pool's index, loaded from `folder/index-<kind>.faiss` when it was built over the same embeddings,
    else built and saved there. Returns (index, loaded_from_disk)."""
    fingerprint = f"{emb.meta['pool_fingerprint']}:{emb.meta['weights_sha256']}:{len(emb)}"
    path = folder / f"index-{kind}.faiss"
    if path.is_file() and path.with_name(path.name + ".json").is_file():
        try:
            idx = VectorIndex.load(path)
        except ConfigError:
            idx = None
        if idx is not None and idx.fingerprint == fingerprint:
            return idx, True
    idx = build_index(emb.vectors, kind, seed=seed, fingerprint=fingerprint)
    idx.save(path)
    return idx, False


def guarded(emb_dir: Path, emb: Embeddings, encoder: torch.nn.Module, guard: dict[str, ImageSet], rule: DupRule,
            device: str, batch_size: int) -> tuple[GuardSet, np.ndarray, np.ndarray, np.ndarray, bool]:
    """The guard set and `leakage_flags` over the pool, cached in `emb_dir/cache/` under a key of everything
    they depend on (encoder weights, pool, guard images, rule). Returns (..., loaded_from_cache)."""
    key = hashlib.sha256(json.dumps({
        "format": 1, "weights": emb.meta["weights_sha256"], "pool": emb.meta["pool_fingerprint"], "count": len(emb),
        "guard": {name: s.content_hash() for name, s in sorted(guard.items())}, "rule": asdict(rule),
    }, sort_keys=True).encode()).hexdigest()[:24]
    path = emb_dir / "cache" / f"guard-{key}.npz"
    if path.is_file():
        try:
            z = np.load(path, allow_pickle=False)
            g = GuardSet(z["vectors"], z["signatures"], [str(i) for i in z["ids"]])
            return g, z["flags"], z["match"], z["reason"], True
        except (OSError, ValueError, KeyError):
            pass  # unreadable: compute again and overwrite
    g = guard_set(encoder, list(guard.values()), device, batch_size)
    flags, match, reason = leakage_flags(emb, g, rule)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, vectors=g.vectors, signatures=g.signatures, ids=np.array(g.ids, dtype=str), flags=flags,
                 match=match, reason=reason)
    return g, flags, match, reason, False


def write_manifest_rows(path: Path, ids: list[str], sources: list[str], scores: list[float], queries: list[str],
                        locations: list[str]) -> None:
    """`manifest.csv` (`MANIFEST_COLUMNS`), one row per curated image, written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for i, src, s, q, loc in zip(ids, sources, scores, queries, locations, strict=True):
        w.writerow([i, src, "" if s != s else f"{s:.5f}", q, loc])
    write_text(path, buf.getvalue())


def write_manifest(path: Path, emb: Embeddings, rows: list[int], scores: list[float], queries: list[str]) -> None:
    write_manifest_rows(path, [emb.ids[r] for r in rows], [emb.sources[r] for r in rows], scores, queries,
                        [emb.locations[r] for r in rows])


def _encoder_for(emb: Embeddings, device: str) -> tuple[torch.nn.Module, EncoderSpec]:
    from taskdistill.cache.teacher_outputs import weights_hash

    spec = EncoderSpec.from_dict(emb.meta["encoder"])
    encoder = build_encoder(spec, device)
    if weights_hash(encoder) != emb.meta["weights_sha256"]:
        raise ConfigError(f"the encoder rebuilt from {spec.to_dict()} has other weights than the one that embedded "
                          f"the pool (changed checkpoint, package or library version?); rerun `taskdistill embed --force`")
    return encoder, spec


def split_for_curation(cfg: RunConfig) -> tuple[ImageSet, dict[str, ImageSet]]:
    """The run's labeled images (the queries) and the images the guard keeps out: test, and validation if any.

    Uses the same data spec and seeded split as `taskdistill run` with this config.
    """
    from taskdistill.data.prepare import load_size_for, load_task_data
    from taskdistill.data.splits import few_shot_split

    d = cfg.data
    task = load_task_data(d, load_size_for(cfg))
    split_seed = cfg.seed if d.split_seed is None else d.split_seed
    split = few_shot_split(task.train.labels, task.class_names, split_seed, d.labels_per_class, d.max_per_class,
                           d.label_fraction, d.val_per_class)
    guard = {"test": task.test}
    if len(split.val):
        guard["val"] = task.train.subset(split.val)
    return task.train.subset(split.labeled), guard


def curate_transfer_set(emb_dir: str | Path, labeled: ImageSet, guard: dict[str, ImageSet], opts: CurateOptions,
                        out: str | Path) -> dict[str, Any]:
    """Curate `opts.n` pool images for the task of `labeled`, keeping out near-copies of the `guard` sets
    (e.g. {"test": ..., "val": ...}); write `out/manifest.csv` and `out/summary.json`; return the summary."""
    t0 = time.perf_counter()
    emb_dir, out = Path(emb_dir), Path(out)
    emb = load_embeddings(emb_dir)
    encoder, spec = _encoder_for(emb, opts.device)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    queries: Queries = image_queries(encoder, labeled, opts.views, opts.seed, opts.device, opts.batch_size)
    if opts.strategy == "query-balanced-text":
        queries = text_queries(spec, labeled.class_names, opts.prompt, opts.device)
    timings["queries"] = time.perf_counter() - t

    t = time.perf_counter()
    g, flags, match, reason, guard_cached = guarded(emb_dir, emb, encoder, guard, opts.leak_rule, opts.device,
                                                    opts.batch_size)
    eligible = emb.valid & ~flags
    timings["leakage_guard"] = time.perf_counter() - t

    index, index_info = None, None
    if opts.strategy.startswith("query-balanced"):
        t = time.perf_counter()
        index, loaded = pool_index(emb_dir, emb, opts.index_kind, opts.seed)
        index_info = {"kind": index.kind, "params": index.choice.params, "loaded": loaded}
        timings["index"] = time.perf_counter() - t

    t = time.perf_counter()
    sel = select(emb, opts.strategy, opts.n, queries, eligible, index, opts.dedup_rule, opts.seed)
    timings["select"] = time.perf_counter() - t

    dropped = np.flatnonzero(flags)
    guard_sizes = {name: len(s) for name, s in guard.items()}
    summary = summarize(emb, sel, opts.strategy, opts.n, opts.task_source)
    summary.update({
        "queries": len(queries), "query_views": opts.views if opts.strategy != "query-balanced-text" else 0,
        "encoder": spec.to_dict(), "embeddings": str(emb_dir), "pool_size": len(emb),
        "pool_unreadable": int((~emb.valid).sum()), "index": index_info,
        "leakage": {
            "guard_images": guard_sizes, "dropped": int(len(dropped)), "cached": guard_cached,
            "by_pixel_signature": int((reason == 1).sum()), "by_embedding": int((reason == 2).sum()),
            "dropped_by_source": dict(Counter(emb.sources[i] for i in dropped.tolist())),
            "rule": asdict(opts.leak_rule),
            "examples": [{"pool_id": emb.ids[i], "guard_id": g.ids[int(match[i])],
                          "signature_cos": round(float(emb.signatures[i] @ g.signatures[int(match[i])]), 4),
                          "embedding_cos": round(float(emb.vectors[i] @ g.vectors[int(match[i])]), 4)}
                         for i in dropped[:20].tolist()],
        },
        "dedup_rule": asdict(opts.dedup_rule) if opts.dedup_rule is not None else None,
        "seed": opts.seed, "seconds": {k: round(v, 2) for k, v in {**timings,
                                                                 "total": time.perf_counter() - t0}.items()},
        "manifest": str(out / "manifest.csv"),
    })
    if len(sel.rows) < opts.n:
        summary["warning"] = (f"only {len(sel.rows)} of {opts.n} images could be curated (pool of {len(emb)}, "
                              f"{int(eligible.sum())} eligible after the leakage guard, duplicates removed)")
    write_manifest(out / "manifest.csv", emb, sel.rows, sel.scores, sel.queries)
    write_json(out / "summary.json", summary)
    return summary
