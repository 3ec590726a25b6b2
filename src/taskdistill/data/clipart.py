"""The built-in `clipart` dataset: 17 classes of clip art from two Debian packages, built once into a folder.

Sources: `openclipart-png` (Open Clip Art Library, public domain, `/usr/share/openclipart/png`) and
`tuxpaint-stamps-default` (Tux Paint stamps, GPL-2, `/usr/share/tuxpaint/stamps`), whose category folders
are mapped to the classes of `CLASSES`. The build is deterministic, the same on every machine with the same
package versions:

1. every PNG a class's rules name is read; identical files (same SHA-256) are one image, and an image
   named by two classes is dropped as ambiguous;
2. each image is composited on white (RGBA, palette transparency), cropped to its opaque part and fitted,
   aspect kept, into a `side`-pixel white square (default 128 px); identical results count as duplicates too;
3. per class the images are ordered by the SHA-256 of their source file, the first `test_per_class` are the
   test split and the rest the training split, so no image (or copy of it) is in both;
4. `<root>/train/<class>/<sha16>.png`, `<root>/test/<class>/<sha16>.png` and `<root>/dataset.json` (every
   file's sources, the dropped files and why, the package versions) are written into a temporary folder that
   is renamed into place when complete: a crash leaves no half-built dataset.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from taskdistill.data.image_store import default_store_dir
from taskdistill.data.store_decode import usable_cores
from taskdistill.errors import DataError
from taskdistill.folders import exclusive_lock

FORMAT = "taskdistill-clipart/1"
MARKER = "dataset.json"
SIDE = 128
TEST_PER_CLASS = 40
MIN_TRAIN = 10  # a class keeps at least the 10 labels of the default budget for training
PACKAGES = {"openclipart": "openclipart-png", "tuxpaint": "tuxpaint-stamps-default"}
INSTALL_HINT = ("apt-get install openclipart-png tuxpaint-stamps-default (or scripts/setup_clipart_data.sh)")
# Trusted package files: a few clip-art PNGs are ~170-Mpixel renders, beyond PIL's bomb guard (179 Mpixel).
_MAX_PIXELS = 400_000_000

# Class -> the package folders it takes. `source:folder/**` takes every PNG below the folder,
# `source:folder/*` only the PNGs directly in it. Left out: abstract or mixed categories (shapes/stars,
# computer/icons, special/patterns, signs_and_symbols, office, transportation/boating: knots and boats, ...) and
# those with fewer than
# TEST_PER_CLASS + MIN_TRAIN distinct images (fish, drinks alone, smilies, space, ...); docs/data.md.
CLASSES: dict[str, tuple[str, ...]] = {
    "bird": ("openclipart:animals/birds/**", "tuxpaint:animals/birds/**"),
    "building": ("openclipart:buildings/*", "openclipart:buildings/homes/**", "tuxpaint:town/houses/**",
                 "tuxpaint:town/monuments/**"),
    "clothing": ("openclipart:people/clothing/**", "tuxpaint:clothes/**"),
    "flag": ("openclipart:signs_and_symbols/flags/**", "tuxpaint:town/flags/**"),
    "food": ("openclipart:food/*", "openclipart:food/beverages/**", "openclipart:food/breads_and_carbs/**",
             "openclipart:food/dairy/**", "openclipart:food/desserts/**", "openclipart:food/meats_and_eggs/**",
             "tuxpaint:food/*", "tuxpaint:food/dessert/**", "tuxpaint:food/spices/**"),
    "fruit_vegetable": ("openclipart:food/fruit/**", "openclipart:food/vegetables/**", "tuxpaint:food/fruit/**",
                        "tuxpaint:food/vegetables/**", "tuxpaint:food/nuts/**"),
    "game": ("openclipart:recreation/games/**", "tuxpaint:symbols/chess/**"),
    "insect": ("openclipart:animals/bugs/**", "tuxpaint:animals/insects/**"),
    "mammal": ("openclipart:animals/mammals/**", "tuxpaint:animals/mammals/**", "tuxpaint:animals/marsupials/**"),
    "map": ("openclipart:geography/*",),
    "music": ("openclipart:recreation/music/**", "tuxpaint:hobbies/music/**", "tuxpaint:symbols/music/**"),
    "person": ("openclipart:people/*", "openclipart:people/stickmen/**"),
    "plant": ("openclipart:plants/**", "tuxpaint:plants/**"),
    "road_sign": ("openclipart:transportation/roadsigns/**", "tuxpaint:town/roadsigns/**"),
    "sport": ("openclipart:recreation/sports/**", "tuxpaint:sports/**"),
    "tool": ("openclipart:tools/*", "tuxpaint:household/tools/**"),
    "vehicle": ("openclipart:transportation/vehicles/**", "tuxpaint:vehicles/**", "tuxpaint:military/vehicles/**"),
}


@dataclass(frozen=True)
class ClipartRoots:
    """Where each package's category folders are (defaults: where Debian installs them)."""

    openclipart: Path = Path("/usr/share/openclipart/png")
    tuxpaint: Path = Path("/usr/share/tuxpaint/stamps")

    def of(self, source: str) -> Path:
        return {"openclipart": self.openclipart, "tuxpaint": self.tuxpaint}[source]


@dataclass
class _Image:
    """One distinct source image: its class, the SHA-256 of its file, and every file that holds it."""

    label: str
    sha256: str
    sources: list[str] = field(default_factory=list)  # `source/relative/path.png`, sorted
    path: Path = Path()


def default_clipart_dir() -> Path:
    """`<cache>/datasets/clipart-v1`, beside the image stores (`$TASKDISTILL_CACHE_DIR` or ~/.cache/taskdistill)."""
    return default_store_dir().parent / "datasets" / f"clipart-v{FORMAT.rsplit('/', 1)[1]}"


def missing_packages(roots: ClipartRoots) -> list[str]:
    """The Debian packages whose folder is absent or holds no PNG."""
    missing = []
    for source, package in PACKAGES.items():
        root = roots.of(source)
        if not root.is_dir() or next(root.rglob("*.png"), None) is None:
            missing.append(package)
    return missing


def _rule_files(rule: str, roots: ClipartRoots) -> Iterator[tuple[str, Path]]:
    """(`source/relative/path.png`, path) of every PNG one `source:folder/**` or `source:folder/*` rule names."""
    source, _, pattern = rule.partition(":")
    folder, _, depth = pattern.rpartition("/")
    if source not in PACKAGES or depth not in ("*", "**") or not folder:
        raise DataError(f"clipart class rule '{rule}' must look like 'SOURCE:folder/**' or 'SOURCE:folder/*' "
                        f"with SOURCE one of {', '.join(PACKAGES)}")
    base = roots.of(source)
    top = base / folder
    if not top.is_dir():
        return
    if depth == "*":
        walk: Iterator[tuple[str, list[str], list[str]]] = iter([next(os.walk(top))])
    else:
        walk = os.walk(top, followlinks=True)
    for where, _dirs, files in walk:
        for name in files:
            if name.lower().endswith(".png"):
                path = Path(where) / name
                if path.is_file():
                    yield f"{source}/{path.relative_to(base).as_posix()}", path


def _collect(classes: Mapping[str, tuple[str, ...]], roots: ClipartRoots) -> tuple[list[_Image], dict[str, list[str]]]:
    """The distinct images of every class, and the dropped files: `ambiguous` (the same file in two classes)."""
    by_sha: dict[str, _Image] = {}
    labels_of: dict[str, set[str]] = {}
    for label in sorted(classes):
        for rule in classes[label]:
            for source_id, path in _rule_files(rule, roots):
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
                labels_of.setdefault(sha, set()).add(label)
                img = by_sha.setdefault(sha, _Image(label, sha))
                if source_id not in img.sources:
                    img.sources.append(source_id)
    ambiguous = []
    images = []
    for sha, img in by_sha.items():
        img.sources.sort()
        img.path = roots.of(img.sources[0].split("/", 1)[0]) / img.sources[0].split("/", 1)[1]
        if len(labels_of[sha]) > 1:
            ambiguous.extend(f"{s} ({', '.join(sorted(labels_of[sha]))})" for s in img.sources)
        else:
            images.append(img)
    images.sort(key=lambda i: i.sources[0])
    return images, {"ambiguous": sorted(ambiguous)}


def render(path: Path, side: int) -> bytes:
    """One clip-art file as PNG bytes: composited on white, cropped to its opaque part, fitted (aspect kept)
    into a white `side` x `side` square. Raises OSError/ValueError/... for a file PIL cannot read."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = _MAX_PIXELS  # open() and crop() check it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                if im.mode in ("I", "I;16", "I;16B", "I;16L"):
                    arr = np.asarray(im, dtype=np.float64)
                    top = 65535.0 if arr.max() > 255 else 255.0
                    im = Image.fromarray((arr * (255.0 / top)).round().astype(np.uint8), "L")
                rgba = im.convert("RGBA")
            box = rgba.getchannel("A").getbbox()
            if box is None:
                raise ValueError("the image is fully transparent")
            rgba = rgba.crop(box)
            scale = side / max(rgba.size)
            size = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
            rgba = rgba.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((side - size[0]) // 2, (side - size[1]) // 2))
    out = io.BytesIO()
    canvas.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def _render_job(job: tuple[str, int]) -> bytes | str:
    """A worker's task: PNG bytes, or the reason the file could not be read."""
    try:
        return render(Path(job[0]), job[1])
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"


def _package_versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES.values():
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                                 timeout=30, check=False)
            versions[package] = out.stdout.strip() if out.returncode == 0 else "unknown"
        except (OSError, subprocess.SubprocessError):
            versions[package] = "unknown"
    return versions


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def build_clipart(out: Path, roots: ClipartRoots = ClipartRoots(), classes: Mapping[str, tuple[str, ...]] = CLASSES,
                  side: int = SIDE, test_per_class: int = TEST_PER_CLASS, min_train: int = MIN_TRAIN,
                  workers: int | None = None) -> dict[str, Any]:
    """Write the folder dataset into `out` (which must not exist or be empty) and return its `dataset.json`
    record. Not atomic by itself: `ensure_clipart` builds into a temporary folder and renames it."""
    missing = missing_packages(roots)
    if missing:
        raise DataError(f"the clipart dataset needs the Debian package(s) {', '.join(missing)} (looked in "
                        f"{roots.openclipart} and {roots.tuxpaint}); install them with `{INSTALL_HINT}`")
    started = time.time()
    images, dropped = _collect(classes, roots)
    jobs = [(str(img.path), side) for img in images]
    n_workers = max(1, min(workers or usable_cores(), len(jobs) or 1))
    if n_workers == 1:
        rendered = [_render_job(j) for j in jobs]
    else:
        with ProcessPoolExecutor(n_workers) as pool:
            rendered = list(pool.map(_render_job, jobs, chunksize=8))
    unreadable: dict[str, str] = {}
    groups: dict[str, list[tuple[_Image, bytes]]] = {}  # by the SHA-256 of the rendered pixels
    for img, result in zip(images, rendered, strict=True):
        if isinstance(result, str):
            unreadable.update({s: result for s in img.sources})
            continue
        pixels = hashlib.sha256(np.asarray(Image.open(io.BytesIO(result))).tobytes()).hexdigest()
        groups.setdefault(pixels, []).append((img, result))
    pixel_duplicates: list[str] = []
    kept: dict[str, list[tuple[_Image, bytes]]] = {label: [] for label in classes}
    for group in groups.values():  # the same picture in other files (another size or encoding)
        first = group[0][0]  # images are in source order: the first source names the group
        if len({img.label for img, _ in group}) > 1:
            dropped["ambiguous"].extend(f"{s} (same pixels in {', '.join(sorted({i.label for i, _ in group}))})"
                                        for img, _ in group for s in img.sources)
            continue
        pixel_duplicates.extend(f"{s} (= {first.sources[0]})" for img, _ in group[1:] for s in img.sources)
        kept[first.label].append(group[0])
    short = {label: len(items) for label, items in kept.items() if len(items) < test_per_class + min_train}
    if short:
        raise DataError(f"clipart classes with fewer than {test_per_class} test + {min_train} training images: "
                        f"{short}; merge or drop them in the class map")
    files = []
    counts = {}
    for label in sorted(kept):
        items = sorted(kept[label], key=lambda item: item[0].sha256)
        for rank, (img, data) in enumerate(items):
            split = "test" if rank < test_per_class else "train"
            rel = f"{split}/{label}/{img.sha256[:16]}.png"
            _write_file(out / rel, data)
            files.append({"file": rel, "sha256": img.sha256, "sources": img.sources})
        counts[label] = {"train": len(items) - test_per_class, "test": test_per_class}
    record = {
        "format": FORMAT, "side": side, "test_per_class": test_per_class,
        "split": "per class, images ordered by the SHA-256 of their source file; the first test_per_class are test",
        "packages": _package_versions(), "roots": {s: str(roots.of(s)) for s in PACKAGES},
        "classes": {label: {"rules": list(classes[label]), **counts[label]} for label in sorted(classes)},
        "images": {"train": sum(c["train"] for c in counts.values()), "test": sum(c["test"] for c in counts.values())},
        "dropped": {"ambiguous": sorted(dropped["ambiguous"]), "pixel_duplicates": sorted(pixel_duplicates),
                    "unreadable": dict(sorted(unreadable.items()))},
        "build_seconds": round(time.time() - started, 1),
        "files": files,
    }
    _write_file(out / MARKER, (json.dumps(record, indent=1) + "\n").encode())
    return record


def read_record(root: Path) -> dict[str, Any] | None:
    """The `dataset.json` of a built clipart folder, or None if `root` holds none."""
    try:
        record = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def ensure_clipart(root: str | Path | None = None, roots: ClipartRoots = ClipartRoots(),
                   classes: Mapping[str, tuple[str, ...]] = CLASSES, side: int = SIDE,
                   test_per_class: int = TEST_PER_CLASS, workers: int | None = None) -> Path:
    """The built clipart folder at `root` (default `default_clipart_dir()`), built first if absent: into
    `.<name>.partial` beside it, then renamed, under a lock, so concurrent runs build it once and a crash
    leaves only a partial folder that the next build removes."""
    target = Path(root) if root is not None else default_clipart_dir()
    lock = target.parent / f".{target.name}.lock"
    if read_record(target) is None:
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise DataError(f"'{target}' exists but is not a built clipart dataset (no {MARKER}): remove it, or set "
                            f"data.root to an empty or new folder")
        with exclusive_lock(lock, f"the clipart dataset at {target}"):
            if read_record(target) is None:
                partial = target.parent / f".{target.name}.partial"
                if partial.exists():
                    print(f"removing '{partial}', left by an interrupted build", file=sys.stderr, flush=True)
                    shutil.rmtree(partial)
                print(f"building the clipart dataset into '{target}' from Debian's {', '.join(PACKAGES.values())} "
                      f"(once)", file=sys.stderr, flush=True)
                record = build_clipart(partial, roots, classes, side, test_per_class, workers=workers)
                if target.is_dir():
                    target.rmdir()  # empty, checked above
                os.replace(partial, target)
                fd = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                print(f"clipart dataset: {len(record['classes'])} classes, {record['images']['train']} train + "
                      f"{record['images']['test']} test images, built in {record['build_seconds']} s",
                      file=sys.stderr, flush=True)
    record = read_record(target)
    if record is None or record.get("format") != FORMAT:
        found = record.get("format") if record else None
        raise DataError(f"'{target}' holds a clipart dataset of format {found!r}, this version reads {FORMAT!r}: "
                        f"remove the folder to rebuild it")
    return target
