"""Retrieval verbs: `pool build-demo`, `pool info`, `embed` and `curate` (retrieval-augmented transfer sets)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from taskdistill.cli.common import add_config_args, config_from_args

if TYPE_CHECKING:
    from taskdistill.config.schema import RunConfig


def register(sub: argparse._SubParsersAction) -> None:
    from taskdistill.retrieval.curate import DEFAULT_PROMPT, STRATEGIES, DupRule
    from taskdistill.retrieval.demo_pool import DEFAULT_CAPS
    from taskdistill.retrieval.index import KINDS

    rule = DupRule()
    pool = sub.add_parser("pool", help="image pools for retrieval-augmented transfer sets")
    pool_sub = pool.add_subparsers(dest="pool_verb", required=True, metavar="POOL_VERB")
    p = pool_sub.add_parser("build-demo", help="build the offline demo pool (Fashion-MNIST train, MNIST, emoji, "
                                               "clip art, Tux Paint stamps, font glyphs) as tar shards")
    p.add_argument("--out", required=True, help="folder for shard-*.tar and pool.json")
    p.add_argument("--cap", action="append", default=[], metavar="SOURCE=N",
                   help=f"images per source (repeatable); defaults {DEFAULT_CAPS}")
    p.add_argument("--shard-size", type=int, default=5000, help="images per tar shard")
    p.add_argument("--max-side", type=int, default=128, help="larger images are shrunk to this side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--npm-dir", default="data/npm", help="where scripts/setup_pool_data.sh unpacked the npm packages")
    p.add_argument("--require-all", action="store_true", help="fail instead of skipping a source that is missing")
    p.add_argument("--force", action="store_true", help="replace a pool already in --out")
    p.set_defaults(func=_build_demo)

    p = pool_sub.add_parser("info", help="count a pool's images per source")
    p.add_argument("pool", help="a folder of *.tar shards, a folder tree of images, or a CSV (path[,source])")
    p.set_defaults(func=_pool_info)

    p = sub.add_parser("embed", help="embed an image pool with an encoder into resumable .npy shards")
    p.add_argument("pool", help="a folder of *.tar shards, a folder tree of images, or a CSV (path[,source])")
    p.add_argument("--encoder", default=None, help="model name: timm, open_clip:MODEL[/TAG] or hf:REPO")
    p.add_argument("--pretrained", action="store_true", help="take the encoder's pretrained weights")
    p.add_argument("--checkpoint", default=None, help="a taskdistill checkpoint, or a state dict for --encoder")
    p.add_argument("--input-size", type=int, default=None, help="encoder input side (default: the model's)")
    p.add_argument("--load-size", type=int, default=None, help="decode pool images at this side (default: input size)")
    p.add_argument("--out", required=True, help="embedding folder")
    p.add_argument("--shard-size", type=int, default=4096, help="images per emb-*.npy shard")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: all this process may use)")
    p.add_argument("--seed", type=int, default=0, help="fixes the initialisation of a random (not pretrained) encoder")
    p.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail",
                   help="skip: embed unreadable images as zero vectors, which are never curated")
    p.add_argument("--force", action="store_true", help="discard embeddings already in --out")
    p.set_defaults(func=_embed)

    p = sub.add_parser("curate", help="curate a transfer-set manifest from pool embeddings for a config's task")
    p.add_argument("embeddings", help="embedding folder made by `taskdistill embed`, or a clip-retrieval folder "
                                      "(img_emb/ + metadata/, e.g. LAION's) for web-scale pools")
    add_config_args(p)
    p.add_argument("--strategy", choices=STRATEGIES, default="query-balanced-image")
    p.add_argument("--n", type=int, required=True, help="transfer-set size")
    p.add_argument("--out", required=True, help="folder for manifest.csv and summary.json")
    p.add_argument("--views", type=int, default=4, help="crops/flips per labeled image added as extra queries")
    p.add_argument("--task-source", default=None, help="pool source of the task's own domain, for the precision figure")
    p.add_argument("--index", choices=KINDS, default="auto", help="pool index type (auto: chosen by pool size)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="text query template for query-balanced-text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--leak-sig-threshold", type=float, default=rule.sig_threshold,
                   help="pixel-signature cosine at or above which a pool image is a copy of a test/val image")
    p.add_argument("--leak-emb-threshold", type=float, default=rule.emb_threshold,
                   help="embedding cosine at or above which (with --leak-sig-floor) a pool image is a copy")
    p.add_argument("--leak-sig-floor", type=float, default=rule.sig_floor,
                   help="pixel-signature cosine an embedding match must also reach")
    p.add_argument("--dedup-sig-threshold", type=float, default=rule.sig_threshold)
    p.add_argument("--dedup-emb-threshold", type=float, default=rule.emb_threshold)
    p.add_argument("--dedup-sig-floor", type=float, default=rule.sig_floor)
    p.add_argument("--no-dedup", action="store_true", help="keep near-duplicates inside the curated set")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    web = p.add_argument_group("clip-retrieval pools (web scale; query-balanced-image only)")
    web.add_argument("--encoder", default=None, help="the model that embedded the pool (default: its encoder.json)")
    web.add_argument("--pretrained", action="store_true", help="take the encoder's pretrained weights")
    web.add_argument("--input-size", type=int, default=None, help="encoder input side for the query images")
    web.add_argument("--index-dir", default=None, help="on-disk IVF-PQ index folder (default POOL/taskdistill-index)")
    web.add_argument("--nlist", type=int, default=None, help="IVF cells (default ~sqrt(N)/4, a power of two)")
    web.add_argument("--nprobe", type=int, default=None, help="cells searched per query (default nlist/16)")
    web.add_argument("--pq-m", type=int, default=None, help="PQ bytes per vector (default D/8)")
    web.add_argument("--rerank", type=int, default=2, help="re-rank RERANK x k index candidates exactly per query")
    web.add_argument("--exact", action="store_true", help="exact streaming scan instead of the index (slow, reference)")
    web.add_argument("--shards", default=None, help="folder of the pool's webdataset shards (img2dataset naming, "
                                                   "metadata column 'key'); else the metadata's 'image_path'")
    web.add_argument("--shard-digits", type=int, default=5, help="leading digits of a key that name its shard")
    web.add_argument("--copy-images", action="store_true",
                     help="copy the picked images into OUT/images/picked-*.tar (reads only the picked members)")
    p.set_defaults(func=_curate)


def _build_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taskdistill.retrieval.demo_pool import SourceRoots, build_demo_pool, parse_caps

    summary = build_demo_pool(args.out, SourceRoots(npm=Path(args.npm_dir)), parse_caps(args.cap), args.shard_size,
                              args.seed, args.max_side, args.require_all, args.force)
    print(json.dumps({k: summary[k] for k in ("images", "counts", "shards", "skipped_sources")}, indent=2))
    return 0


def _pool_info(args: argparse.Namespace) -> int:
    from collections import Counter

    from taskdistill.retrieval.pool import open_pool

    pool = open_pool(args.pool)
    counts = Counter(pool.sources)
    print(f"{args.pool}: {len(pool)} images ({pool.kind})")
    for source, n in counts.most_common():
        print(f"  {source:<20} {n}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from taskdistill.engine.device import resolve_device, set_threads
    from taskdistill.retrieval.embed import EncoderSpec, embed_pool
    from taskdistill.retrieval.pool import open_pool

    set_threads(args.num_threads)
    pool = open_pool(args.pool)
    spec = EncoderSpec(name=args.encoder, pretrained=args.pretrained, checkpoint=args.checkpoint,
                       input_size=args.input_size, seed=args.seed)
    meta = embed_pool(pool, spec, args.out, args.shard_size, args.batch_size, args.load_size, args.dtype,
                      resolve_device(args.device), args.on_bad_image, args.force)
    print(f"embedded {meta['count']} images ({meta['encoder_model']}, dim {meta['dim']}) into {args.out}")
    return 0


def _curate(args: argparse.Namespace) -> int:
    from taskdistill.engine.device import resolve_device, set_threads
    from taskdistill.retrieval.clip_layout import is_clip_layout
    from taskdistill.retrieval.transfer_set import CurateOptions, curate_transfer_set, split_for_curation

    cfg = config_from_args(args)
    set_threads(cfg.num_threads)
    if is_clip_layout(args.embeddings):
        return _curate_web(args, cfg)
    labeled, guard = split_for_curation(cfg)
    opts = CurateOptions(
        strategy=args.strategy, n=args.n, views=args.views, seed=args.seed, task_source=args.task_source,
        index_kind=args.index, prompt=args.prompt,
        **_rules(args), device=str(resolve_device(args.device)))
    summary = curate_transfer_set(args.embeddings, labeled, guard, opts, args.out)
    return _show(summary, ("strategy", "n_selected", "sources", "precision", "leakage", "duplicates_rejected",
                           "manifest"))


def _curate_web(args: argparse.Namespace, cfg: RunConfig) -> int:
    from taskdistill.engine.device import resolve_device
    from taskdistill.errors import ConfigError
    from taskdistill.retrieval.transfer_set import split_for_curation
    from taskdistill.retrieval.web_transfer_set import WebCurateOptions, curate_web_pool

    if args.strategy != "query-balanced-image":
        raise ConfigError(f"--strategy {args.strategy} is not available for clip-retrieval pools ('{args.embeddings}'); "
                          f"they are curated with --strategy query-balanced-image")
    labeled, guard = split_for_curation(cfg)
    opts = WebCurateOptions(
        n=args.n, views=args.views, seed=args.seed, encoder=args.encoder, pretrained=args.pretrained,
        input_size=args.input_size, index_dir=args.index_dir, nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m,
        rerank=args.rerank, exact=args.exact, shards=args.shards, shard_digits=args.shard_digits,
        copy_images=args.copy_images, task_source=args.task_source,
        **_rules(args), device=str(resolve_device(args.device)))
    summary = curate_web_pool(args.embeddings, labeled, guard, opts, args.out)
    return _show(summary, ("strategy", "n_selected", "pool_size", "sources", "precision", "duplicates_rejected",
                           "seconds", "manifest"))


def _rules(args: argparse.Namespace) -> dict[str, Any]:
    """The leakage guard's and the deduplicator's rules from the command line (`dedup_rule` None: no dedup)."""
    from taskdistill.retrieval.curate import DupRule

    return {"leak_rule": DupRule(args.leak_sig_threshold, args.leak_emb_threshold, args.leak_sig_floor),
            "dedup_rule": None if args.no_dedup else DupRule(args.dedup_sig_threshold, args.dedup_emb_threshold,
                                                             args.dedup_sig_floor)}


def _show(summary: dict[str, Any], keys: tuple[str, ...]) -> int:
    """Print a curation summary's `keys` (leakage without its examples) and how to use the manifest."""
    shown = {k: summary.get(k) for k in keys}
    shown["leakage"] = {k: v for k, v in summary["leakage"].items() if k != "examples"}
    print(json.dumps(shown, indent=2))
    if "warning" in summary:
        print(f"warning: {summary['warning']}")
    print(f"use it with: --set distill.transfer.source={summary['manifest']}")
    return 0
