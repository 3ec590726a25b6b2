"""`taskdistill models [PATTERN] [--pretrained]`: names the registry can build."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model names (timm names; open_clip:/hf: prefixes for other hubs)")
    p.add_argument("pattern", nargs="?", default=None, help="wildcard filter, e.g. '*mobilevit*'")
    p.add_argument("--pretrained", action="store_true", help="only models whose weights ship in an installed package")
    p.set_defaults(func=models)


def models(args: argparse.Namespace) -> int:
    import fnmatch

    import timm

    from taskdistill.models.packaged import PACKAGED_WEIGHTS

    if args.pretrained:
        names = sorted(PACKAGED_WEIGHTS)
        if args.pattern:
            names = fnmatch.filter(names, args.pattern)
        for n in names:
            print(f"{n}  (ImageNet-1k weights from pip package {PACKAGED_WEIGHTS[n]})")
        return 0
    for n in timm.list_models(args.pattern or "*"):
        print(n + ("  [packaged weights]" if n in PACKAGED_WEIGHTS else ""))
    print("\nAlso: open_clip:MODEL[/TAG] (open_clip image towers), hf:REPO_OR_FOLDER (Hugging Face AutoModel).")
    return 0
