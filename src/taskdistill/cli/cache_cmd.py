"""`taskdistill cache ls | rm | verify`: see, free and check the image stores (decoded images shared by runs)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="list, remove or verify image stores (decoded images shared by all runs)")
    verbs = p.add_subparsers(dest="cache_verb", required=True, metavar="ls|rm|verify")
    for name, helptext in (("ls", "list image stores: size, images, policy, last use"),
                           ("rm", "remove image stores by key prefix (or --all / --older-than DAYS)"),
                           ("verify", "re-read stores and check every image against its recorded CRC32")):
        v = verbs.add_parser(name, help=helptext)
        v.add_argument("--store-dir", default=None,
                       help="store folder (default: $TASKDISTILL_CACHE_DIR/stores or ~/.cache/taskdistill/stores)")
        if name != "ls":
            v.add_argument("keys", nargs="*", help="store keys or unique key prefixes")
        if name == "rm":
            v.add_argument("--all", action="store_true", help="remove every store, partial and damaged ones too")
            v.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="stores unused for DAYS")
        v.set_defaults(func={"ls": _ls, "rm": _rm, "verify": _verify}[name])


def _root(args: argparse.Namespace) -> Path:
    from taskdistill.data.image_store import default_store_dir

    return Path(args.store_dir) if args.store_dir else default_store_dir()


def _ls(args: argparse.Namespace) -> int:
    from taskdistill.data.image_store import MARKER, human_bytes, list_stores

    root = _root(args)
    good, bad = list_stores(root)
    if not good and not bad:
        print(f"no image stores in {root}")
        return 0
    total = 0
    print(f"image stores in {root}:")
    for s in good:
        size = s.disk_bytes()
        total += size
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime((s.path / MARKER).stat().st_mtime))
        p = s.policy
        print(f"  {s.key[:12]}  {human_bytes(size):>9}  {s.num_images:>10,} img  {p.size}px {p.resize} {p.color}"
              f"  used {used}  {s.description}")
    for path, problem in bad:
        print(f"  {path.name[:12]}  {problem} (`taskdistill cache rm {path.name[:12]}` removes it)")
    print(f"{len(good)} store(s), {human_bytes(total)}")
    return 0


def _match(root: Path, keys: list[str]) -> list[Path]:
    from taskdistill.errors import TaskDistillError

    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    out = []
    for k in keys:
        hits = [p for p in folders if p.name.startswith(k)]
        if len(hits) != 1:
            what = "no store" if not hits else f"{len(hits)} stores"
            raise TaskDistillError(f"{what} in {root} match '{k}'; `taskdistill cache ls` lists the keys")
        out.append(hits[0])
    return out


def _rm(args: argparse.Namespace) -> int:
    from taskdistill.data.image_store import MARKER, human_bytes, remove_store
    from taskdistill.errors import TaskDistillError

    root = _root(args)
    if args.all:
        targets = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    elif args.older_than is not None:
        cutoff = time.time() - args.older_than * 86400
        targets = [p for p in (root.iterdir() if root.is_dir() else []) if p.is_dir()
                   and ((p / MARKER).stat().st_mtime if (p / MARKER).is_file() else p.stat().st_mtime) < cutoff]
    elif args.keys:
        targets = _match(root, args.keys)
    else:
        raise TaskDistillError("name the stores to remove (key prefixes from `taskdistill cache ls`), or pass --all "
                               "or --older-than DAYS")
    freed = 0
    for p in targets:
        freed += remove_store(p)
        print(f"removed {p}")
    print(f"freed {human_bytes(freed)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from taskdistill.data.image_store import list_stores, read_store, verify_store

    root = _root(args)
    stores = [read_store(p) for p in _match(root, args.keys)] if args.keys else list_stores(root)[0]
    failed = 0
    for s in stores:
        damaged = verify_store(s)
        if damaged:
            failed += 1
            print(f"{s.key[:12]}: {len(damaged)} damaged image(s), first rows {damaged[:10]}; "
                  f"`taskdistill cache rm {s.key[:12]}` and rerun to rebuild")
        else:
            print(f"{s.key[:12]}: ok ({s.num_images:,} images)")
    return 1 if failed else 0
