"""From a clip-retrieval pool to a transfer-set manifest: encoder check, queries, guard, on-disk index, curation.

The counterpart of `transfer_set.curate_transfer_set` for pools too big for memory (`docs/retrieval.md`, "Web-scale
pools"). Writes `OUT/manifest.csv` (same columns: `id,source,score,query,location`), `OUT/summary.json` and, with
`copy_images`, `OUT/images/picked-*.tar`, each atomically.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskdistill.atomic import atomic_path, write_json
from taskdistill.data.image_set import ImageSet
from taskdistill.errors import ConfigError
from taskdistill.retrieval.clip_layout import ENCODER_FILE, ClipPool, check_encoder
from taskdistill.retrieval.curate import DupRule, GuardSet, guard_set, image_queries
from taskdistill.retrieval.embed import EncoderSpec, build_encoder
from taskdistill.retrieval.fetch import SHARD_DIGITS, fetch_members, is_url, locations_for
from taskdistill.retrieval.ondisk_index import DEFAULT_DIR, build_ondisk_index, ondisk_params
from taskdistill.retrieval.transfer_set import write_manifest_rows
from taskdistill.retrieval.web_curate import curate_pool


@dataclass
class WebCurateOptions:
    """How to curate a clip-retrieval pool (query-balanced-image): size, encoder, index and fetch settings."""

    n: int
    views: int = 4
    seed: int = 0
    encoder: str | None = None
    pretrained: bool = False
    input_size: int | None = None
    index_dir: str | None = None
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None
    rerank: int = 2
    exact: bool = False
    shards: str | None = None
    shard_digits: int = SHARD_DIGITS
    copy_images: bool = False
    task_source: str | None = None
    leak_rule: DupRule = field(default_factory=DupRule)
    dedup_rule: DupRule | None = field(default_factory=DupRule)
    device: str = "cpu"
    batch_size: int = 256


def _encoder_spec(pool: ClipPool, opts: WebCurateOptions) -> EncoderSpec:
    name = check_encoder(pool, opts.encoder)
    rec = pool.encoder_record()
    if rec is not None and rec.spec is not None and rec.encoder == name:
        spec = EncoderSpec.from_dict(rec.spec)
        return spec if opts.input_size is None else EncoderSpec(**{**spec.to_dict(), "input_size": opts.input_size})
    if rec is not None and rec.encoder == name and opts.pretrained and not rec.pretrained:
        raise ConfigError(f"--pretrained was given but '{pool.root}' was embedded with randomly initialised "
                          f"'{name}' ({ENCODER_FILE}: pretrained false); drop --pretrained to embed queries alike")
    if rec is None and not opts.pretrained:
        print(f"warning: '{pool.root}' does not record whether its encoder was pretrained; queries are embedded "
              f"with randomly initialised '{name}'. Pass --pretrained if the pool used pretrained weights "
              f"(e.g. LAION's CLIP embeddings)", file=sys.stderr)
    pretrained = opts.pretrained or (rec is not None and rec.encoder == name and rec.pretrained)
    return EncoderSpec(name=name, pretrained=pretrained, input_size=opts.input_size, seed=opts.seed)


def _cached_guard(folder: Path, encoder: torch.nn.Module, guard: dict[str, ImageSet], device: str,
                  batch_size: int) -> tuple[GuardSet, bool]:
    """The guard images' embeddings, cached in `folder` under a key of the encoder weights and the images."""
    from taskdistill.cache.teacher_outputs import weights_hash

    key = hashlib.sha256(json.dumps({"weights": weights_hash(encoder), "guard": {
        name: s.content_hash() for name, s in sorted(guard.items())}}, sort_keys=True).encode()).hexdigest()[:24]
    path = folder / f"guard-{key}.npz"
    if path.is_file():
        try:
            z = np.load(path, allow_pickle=False)
            return GuardSet(z["vectors"], z["signatures"], [str(i) for i in z["ids"]]), True
        except (OSError, ValueError, KeyError):
            pass
    g = guard_set(encoder, list(guard.values()), device, batch_size)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, vectors=g.vectors, signatures=g.signatures, ids=np.array(g.ids, dtype=str))
    return g, False


def curate_web_pool(pool_dir: str | Path, labeled: ImageSet, guard: dict[str, ImageSet], opts: WebCurateOptions,
                    out: str | Path) -> dict[str, Any]:
    """Curate `opts.n` images of the clip-retrieval pool at `pool_dir` for the task of `labeled`, keeping out
    near-copies of the `guard` sets; write the manifest and summary into `out`; return the summary."""
    t0 = time.perf_counter()
    pool, out = ClipPool(pool_dir), Path(out)
    locations_for(pool, np.zeros(1, np.int64), opts.shards, opts.shard_digits)  # fail now, not after the search
    spec = _encoder_spec(pool, opts)
    encoder = build_encoder(spec, opts.device)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    queries = image_queries(encoder, labeled, opts.views, opts.seed, opts.device, opts.batch_size)
    check_encoder(pool, spec.name, dim=queries.vectors.shape[1])
    index_dir = Path(opts.index_dir) if opts.index_dir else pool.root / DEFAULT_DIR
    g, guard_cached = _cached_guard(index_dir, encoder, guard, opts.device, opts.batch_size)
    del encoder  # not needed past here: its weights need not sit beside the index and the candidates
    timings["queries_and_guard"] = time.perf_counter() - t

    index, index_info = None, None
    if not opts.exact:
        t = time.perf_counter()
        overrides = {"nlist": opts.nlist, "nprobe": opts.nprobe, "m": opts.pq_m, "seed": opts.seed}
        params = ondisk_params(pool.n, pool.dim, **{k: v for k, v in overrides.items() if v is not None})
        index, loaded = build_ondisk_index(pool, index_dir, params)
        index_info = {"kind": "ivf-pq-ondisk", "params": asdict(index.params), "loaded": loaded, "dir": str(index_dir)}
        timings["index"] = time.perf_counter() - t

    sel = curate_pool(pool, queries, opts.n, index, g, opts.leak_rule, opts.dedup_rule, opts.rerank)
    timings.update(sel.seconds)
    t = time.perf_counter()
    ids, locations = locations_for(pool, sel.rows, opts.shards, opts.shard_digits)
    copied = opts.copy_images or any(is_url(loc) for loc in locations)  # remote shards: only the picks come here
    if copied:
        locations = fetch_members(locations, out / "images")
    sources = ([str(s) for s in pool.column("source", sel.rows)] if "source" in pool.columns else ["web"] * len(ids))
    timings["locations"] = time.perf_counter() - t
    names = [queries.names[q] if q >= 0 else "best-match" for q in sel.query.tolist()]
    write_manifest_rows(out / "manifest.csv", ids, sources, sel.scores.tolist(), names, locations)
    counts = Counter(sources)
    summary: dict[str, Any] = {
        "strategy": "query-balanced-image", "n_requested": opts.n, "n_selected": len(ids),
        "sources": dict(counts.most_common()), "task_source": opts.task_source,
        "precision": counts.get(opts.task_source, 0) / len(ids) if opts.task_source and ids else None,
        "queries": len(queries), "query_views": opts.views, "encoder": spec.to_dict(), "pool": str(pool.root),
        "pool_size": pool.n, "index": index_info, "candidates": sel.candidates,
        "leakage": {"guard_images": {k: len(v) for k, v in guard.items()}, "dropped": sel.guard_dropped,
                    "cached": guard_cached, "rule": asdict(opts.leak_rule), "by_embedding": sel.guard_dropped,
                    "examples": [{"pool_row": r, "guard_id": g.ids[m]} for r, m in sel.guard_examples]},
        "duplicates_rejected": sel.duplicates_rejected, "filled_from_best_matches": sel.filled_from_best_matches,
        "dedup_rule": asdict(opts.dedup_rule) if opts.dedup_rule is not None else None,
        "images_copied": copied, "seed": opts.seed,
        "seconds": {k: round(v, 2) for k, v in {**timings, "total": time.perf_counter() - t0}.items()},
        "manifest": str(out / "manifest.csv"),
    }
    if len(ids) < opts.n:
        summary["warning"] = (f"only {len(ids)} of {opts.n} images could be curated from {sel.candidates} "
                              f"candidates (pool of {pool.n}); duplicates and guarded images were removed")
    write_json(out / "summary.json", summary)
    return summary
