"""Curate a transfer set from an embedded pool: pick N images like the labeled ones, drop near-duplicates
inside the set, and keep near-copies of test / validation images out (the leakage guard).

Strategies (queries are unit vectors `[Q, D]` in the pool's embedding space):
    random                N eligible pool images drawn with a seeded generator
    best-matches          the global top N by best cosine similarity to any query
    query-balanced-image  about N/|Q| nearest pool images per query (queries: the labeled images plus
                          K crops/flips of each); a query whose next neighbour is taken takes its next-best
    query-balanced-text   the same with one text query per class ("a photo of a {name}." through the CLIP
                          text tower of an `open_clip:` encoder)
    class-balanced        about N/C per class: class score = best similarity to that class's queries; each
                          pool image competes only for its best class
Balanced strategies fill any shortfall (lists exhausted by overlaps, duplicates or the guard) with the
best-matches order.

Near-duplicate rule (`DupRule`), for two images with embedding cosine `e` and pixel-signature cosine `s`:
    duplicate  <=>  s >= sig_threshold  or  (e >= emb_threshold and s >= sig_floor)
The pixel signature (`embed.pixel_signature`) catches exact and resized copies whatever the encoder (even a
random one); the embedding clause catches mildly edited copies when the encoder agrees and the pixels roughly do.
`select` removes near-duplicates with `dedup.IndexedDeduper` (the quadratic `Deduper` here is its reference);
`DupRule`, `Queries`, `GuardSet` and the pickers live in the torch-free `picking` and are re-exported here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import replay_views
from taskdistill.errors import ConfigError
from taskdistill.retrieval.dedup import IndexedDeduper, guard_hits
from taskdistill.retrieval.embed import Embeddings, EncoderSpec, encode_set, pixel_signature
from taskdistill.retrieval.index import VectorIndex, require_faiss
from taskdistill.retrieval.picking import (  # noqa: F401 - DupRule, Queries, GuardSet: part of this module's API
    DEFAULT_RULE,
    DupRule,
    GuardSet,
    Queries,
    balanced_pick,
    ordered_pick,
)
from taskdistill.retrieval.picking import (
    quotas as split_quota,
)

STRATEGIES = ("random", "best-matches", "query-balanced-image", "query-balanced-text", "class-balanced")
DEFAULT_PROMPT = "a photo of a {name}."
CHUNK = 4096


@dataclass
class Selection:
    """Curated rows (pool row, score, query name) in pick order, and the summary."""

    rows: list[int]
    scores: list[float]
    queries: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- queries and guard sets

def image_queries(encoder: torch.nn.Module, labeled: ImageSet, views: int = 4, seed: int = 0,
                  device: torch.device | str = "cpu", batch_size: int = 256) -> Queries:
    """The labeled images and `views` crops/flips of each (view 0 plain, 1 mirrored, v >= 2 crop + flip)."""
    n, v = len(labeled), 1 + max(0, views)
    idx = torch.arange(n).repeat_interleave(v)
    vid = torch.arange(v).repeat(n)
    vecs = encode_set(encoder, labeled.images[idx], batch_size, replay_views(idx, vid, seed), device, "embed queries")
    labels = labeled.labels[idx].numpy()
    names = [f"{labeled.class_names[int(labeled.labels[i])]}:{labeled.ids[i]}@v{j}"
             for i, j in zip(idx.tolist(), vid.tolist(), strict=True)]
    return Queries(vecs.numpy().astype(np.float32), labels.astype(np.int64), names, list(labeled.class_names))


def text_queries(spec: EncoderSpec, class_names: Sequence[str], prompt: str = DEFAULT_PROMPT,
                 device: torch.device | str = "cpu") -> Queries:
    """One CLIP text embedding `[C, D]` per class from `prompt.format(name=...)`; needs an `open_clip:` encoder."""
    if not spec.name or not spec.name.startswith("open_clip:"):
        raise ConfigError(f"query-balanced-text needs an open_clip encoder, but the pool was embedded with "
                          f"'{spec.name}'; embed it with --encoder open_clip:MODEL/TAG")
    if "{name}" not in prompt:
        raise ConfigError(f"--prompt '{prompt}' must contain '{{name}}' where the class name goes")
    from taskdistill.models.hub import _require

    open_clip = _require("open_clip")
    model_name, _, tag = spec.name.removeprefix("open_clip:").partition("/")
    torch.manual_seed(spec.seed)  # as build_encoder: a random-init tower pairs with the random image tower
    kwargs: dict[str, Any] = {"pretrained": tag if spec.pretrained else None}
    try:
        model = open_clip.create_model(model_name, **kwargs).to(device).eval()
    except (OSError, RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot build the text tower of '{spec.name}': {e}") from None
    tokenizer = open_clip.get_tokenizer(model_name)
    prompts = [prompt.format(name=c) for c in class_names]
    with torch.inference_mode():
        t = model.encode_text(tokenizer(prompts).to(device)).float()
    vecs = torch.nn.functional.normalize(t, dim=1).cpu().numpy().astype(np.float32)
    return Queries(vecs, np.arange(len(class_names), dtype=np.int64), [f"text:{p}" for p in prompts],
                   list(class_names))


def guard_set(encoder: torch.nn.Module, sets: Sequence[ImageSet], device: torch.device | str = "cpu",
              batch_size: int = 256) -> GuardSet:
    """Embeddings and pixel signatures of the images to keep out (test and validation)."""
    vecs, sigs, ids = [], [], []
    for s in sets:
        if len(s) == 0:
            continue
        vecs.append(encode_set(encoder, s.images, batch_size, device=device, desc="embed guard images").numpy())
        sigs.append(torch.cat([pixel_signature(s.images[i:i + 1024]) for i in range(0, len(s), 1024)]).numpy())
        ids.extend(s.ids)
    if not vecs:
        return GuardSet(np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32), [])
    return GuardSet(np.concatenate(vecs).astype(np.float32), np.concatenate(sigs).astype(np.float32), ids)


# ---------------------------------------------------------------- duplicates and leakage

def _top_ip(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of `queries [Q, D]` against `base [B, D]` -> (scores, rows) `[Q, k]`."""
    faiss = require_faiss()
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(base)))


def leakage_flags(emb: Embeddings, guard: GuardSet, rule: DupRule, k: int = 4) -> tuple[np.ndarray, np.ndarray,
                                                                                         np.ndarray]:
    """Which pool images are near-duplicates of a guard image.

    Returns (flags `[N]` bool, matched guard row `[N]` (-1 when none), reason `[N]`: 0 none, 1 pixel
    signature alone, 2 embedding + signature floor). Exact search, in chunks of the pool.
    """
    flags, match, reason = guard_hits(emb.vectors, emb.signatures, guard, rule, k, CHUNK)
    valid = emb.valid
    flags &= valid
    return flags, np.where(valid, match, -1), np.where(valid, reason, 0)


class Deduper:
    """Accepts candidates in order, rejecting any that is a near-duplicate of one already accepted.

    The quadratic reference (every candidate against every accepted row); `select` uses the equivalent
    `dedup.IndexedDeduper`, which compares each candidate with O(k) accepted rows."""

    def __init__(self, emb: Embeddings, rule: DupRule | None, capacity: int) -> None:
        self.emb, self.rule = emb, rule
        d, s = emb.vectors.shape[1], emb.signatures.shape[1]
        self.kept_e = np.zeros((capacity, d), np.float32)
        self.kept_s = np.zeros((capacity, s), np.float32)
        self.count = 0
        self.rejected = 0

    def accept(self, rows: np.ndarray) -> np.ndarray:
        """Candidate pool rows `[B]` (distinct) -> accepted mask `[B]`; accepted rows join the kept set."""
        ok = np.ones(len(rows), bool)
        if len(rows) == 0:
            return ok
        e, s = self.emb.vectors[rows], self.emb.signatures[rows]
        if self.rule is not None:
            if self.count:
                ok &= ~self.rule(e @ self.kept_e[:self.count].T, s @ self.kept_s[:self.count].T).any(axis=1)
            within = self.rule(e @ e.T, s @ s.T)
            for i in range(len(rows)):
                if ok[i] and i > 0 and (within[i, :i] & ok[:i]).any():
                    ok[i] = False
            self.rejected += int((~ok).sum())
        room = len(self.kept_e) - self.count
        take = np.flatnonzero(ok)
        if len(take) > room:
            ok[take[room:]] = False
            take = take[:room]
        self.kept_e[self.count:self.count + len(take)] = e[take]
        self.kept_s[self.count:self.count + len(take)] = s[take]
        self.count += len(take)
        return ok


# ---------------------------------------------------------------- pickers

def best_match(emb: Embeddings, queries: Queries) -> tuple[np.ndarray, np.ndarray]:
    """Each pool image's best cosine to any query and that query's index: `[N]`, `[N]` (exact scan)."""
    scores, rows = _top_ip(queries.vectors, emb.vectors, 1)
    return scores[:, 0], rows[:, 0]


def class_scores(emb: Embeddings, queries: Queries) -> np.ndarray:
    """`[N, C]`: each pool image's best cosine to the queries of each class."""
    out = np.full((len(emb), len(queries.class_names)), -np.inf, np.float32)
    for c in range(len(queries.class_names)):
        qc = queries.vectors[queries.labels == c]
        if len(qc):
            out[:, c] = _top_ip(qc, emb.vectors, 1)[0][:, 0]
    return out


def select(emb: Embeddings, strategy: str, n: int, queries: Queries | None, eligible: np.ndarray,
           index: VectorIndex | None = None, dedup_rule: DupRule | None = DEFAULT_RULE, seed: int = 0) -> Selection:
    """Pick up to `n` eligible pool rows with `strategy`; `queries` are needed by all but `random`."""
    if strategy not in STRATEGIES:
        import difflib

        close = difflib.get_close_matches(strategy, STRATEGIES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown strategy '{strategy}'.{hint} Use one of: {', '.join(STRATEGIES)}")
    if n <= 0:
        raise ConfigError(f"--n must be positive, got {n}")
    if strategy != "random" and (queries is None or len(queries) == 0):
        raise ConfigError(f"strategy '{strategy}' needs query images (labeled images or class names)")
    dedup = IndexedDeduper(emb, dedup_rule, n)
    taken = np.zeros(len(emb), bool)
    sel = Selection([], [], [])
    best_s, best_q = best_match(emb, queries) if queries is not None and len(queries) else (None, None)

    def pick_best(r: int) -> None:
        sel.rows.append(r)
        sel.scores.append(float(best_s[r]) if best_s is not None else float("nan"))
        sel.queries.append(queries.names[int(best_q[r])] if queries is not None and best_q is not None else "")

    sel.summary["duplicates_rejected"] = 0
    if strategy == "random":
        ordered_pick(np.random.default_rng(seed).permutation(len(emb)), n, eligible, taken, dedup, pick_best)
        sel.summary["duplicates_rejected"] = dedup.rejected
        return sel
    assert queries is not None and best_s is not None
    by_best = np.argsort(-best_s, kind="stable")
    if strategy == "best-matches":
        ordered_pick(by_best, n, eligible, taken, dedup, pick_best)
        sel.summary["duplicates_rejected"] = dedup.rejected
        return sel

    def pick_from(names: list[str]) -> Callable[[int, int, float], None]:
        def on_pick(r: int, q: int, s: float) -> None:
            sel.rows.append(r)
            sel.scores.append(s)
            sel.queries.append(names[q])
        return on_pick

    if strategy in ("query-balanced-image", "query-balanced-text"):
        quotas = split_quota(n, len(queries))
        k = min(len(emb), 4 * max(quotas) + 64)
        if index is None:
            scores, rows = _top_ip(emb.vectors, queries.vectors, k)
        else:
            scores, rows = index.search(queries.vectors, k)
        balanced_pick(list(rows), list(scores), quotas, eligible, taken, dedup, pick_from(queries.names))
    else:  # class-balanced
        cs = class_scores(emb, queries)
        best_class = cs.argmax(axis=1)
        lists, list_scores = [], []
        for c in range(cs.shape[1]):
            mine = np.flatnonzero((best_class == c) & eligible)
            mine = mine[np.argsort(-cs[mine, c], kind="stable")]
            lists.append(mine)
            list_scores.append(cs[mine, c])
        quotas = split_quota(n, cs.shape[1])
        balanced_pick(lists, list_scores, quotas, eligible, taken, dedup,
                       pick_from([f"class:{c}" for c in queries.class_names]))
    before = len(sel.rows)
    ordered_pick(by_best, n, eligible, taken, dedup, pick_best)
    sel.summary["filled_from_best_matches"] = len(sel.rows) - before
    sel.summary["duplicates_rejected"] = dedup.rejected
    return sel


def summarize(emb: Embeddings, sel: Selection, strategy: str, n: int, task_source: str | None) -> dict[str, Any]:
    """Counts a person wants to see: per-source histogram, precision (share from `task_source`), score range."""
    sources = Counter(emb.sources[r] for r in sel.rows)
    pool_sources = Counter(emb.sources)
    scores = np.array([s for s in sel.scores if s == s], dtype=np.float64)
    out: dict[str, Any] = {
        "strategy": strategy, "n_requested": n, "n_selected": len(sel.rows),
        "sources": dict(sorted(sources.items(), key=lambda kv: -kv[1])),
        "pool_sources": dict(sorted(pool_sources.items(), key=lambda kv: -kv[1])),
        "task_source": task_source,
        "precision": (sources.get(task_source, 0) / len(sel.rows) if task_source and sel.rows else None),
        "pool_precision": (pool_sources.get(task_source, 0) / len(emb) if task_source else None),
        "score": ({"min": float(scores.min()), "mean": float(scores.mean()), "max": float(scores.max())}
                  if len(scores) else None),
    }
    out.update(sel.summary)
    return out
