"""Embed an image pool with an encoder: L2-normalised pooled features, written in resumable shards.

Folder layout (`OUT/`):
    meta.json                 encoder spec + weights hash, pool fingerprint, shard size, dim, count, complete
    ids.txt sources.txt locations.txt   one line per pool image, in pool order, each a JSON string (so a
                              name holding a newline or any other character stays one line)
    emb-00000.npy ...         `[n, D]` float16/float32 features of images `i * shard_size ..`, unit norm
    sig-00000.npy ...         `[n, SIG_DIM]` float16 pixel signatures (see `pixel_signature`)
Each shard is written atomically (signature first, embedding last), so a shard whose `emb-*.npy` exists is
complete; a rerun with the same pool and encoder keeps finished shards and continues at the first missing one.
Under a process group (torchrun) the ranks split the missing shards (rank r takes every W-th), each writes
its own shard files, and rank 0 writes the metadata: the folder is byte-identical to one process's.
Unreadable images (with `on_bad_image="skip"`) get an all-zero embedding and are never curated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from taskdistill import distributed
from taskdistill.atomic import atomic_path, write_json, write_text
from taskdistill.data.image_rows import Images
from taskdistill.data.views import Views, model_input, render
from taskdistill.engine.inference import Forward, batched_inference, infer_batch
from taskdistill.errors import CheckpointError, ConfigError
from taskdistill.retrieval.pool import ImagePool

FORMAT = "taskdistill-embeddings/1"
SIG_SIDE = 32  # pixel signature: a 32 x 32 grayscale thumbnail ...
SIG_RENDER = 64  # ... of a fixed 64 x 64 rendering, so 28 px and 100 px copies of an image agree
SIG_BLUR = 5  # ... minus its 5 x 5 local mean (high-pass: silhouettes alone do not match, details must)
SIG_DIM = SIG_SIDE * SIG_SIDE + 1  # + 1 slot that marks flat (contentless) images
FLAT_STD = 1e-3


@dataclass(frozen=True)
class EncoderSpec:
    """What it takes to rebuild the encoder: a model name (timm / `open_clip:` / `hf:`), whether to take its
    pretrained weights, an optional checkpoint (a taskdistill checkpoint or a state dict), the input size
    and the seed that fixes random initialisation (so a random-init encoder can be rebuilt identically)."""

    name: str | None
    pretrained: bool = False
    checkpoint: str | None = None
    input_size: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderSpec:
        return cls(name=d.get("name"), pretrained=bool(d.get("pretrained", False)), checkpoint=d.get("checkpoint"),
                   input_size=d.get("input_size"), seed=int(d.get("seed", 0)))


def _is_taskdistill_checkpoint(path: Path) -> bool:
    """True when `path` (a stem, `.safetensors` or `.json`) has a taskdistill checkpoint's JSON beside it."""
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("format", "")).startswith("taskdistill-checkpoint")


def _load_backbone_state(model: nn.Module, path: Path) -> None:
    """Load a state dict into a headless model: every model key must be there; extra (head) keys are ignored."""
    if not path.is_file():
        raise CheckpointError(f"encoder checkpoint '{path}' does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is the user's file
            raise CheckpointError(f"cannot read encoder weights '{path}': {e}") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(f"encoder weights '{path}' lack {len(missing)} key(s) of '{model.spec.name}', first "
                              f"'{missing[0]}'; pass weights of the same architecture")
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def build_encoder(spec: EncoderSpec, device: torch.device | str = "cpu") -> nn.Module:
    """The encoder in eval mode; `forward_head(forward_features(x), pre_logits=True)` gives `[B, D]`."""
    from taskdistill.models.base import Preprocess
    from taskdistill.models.registry import create_model

    torch.manual_seed(spec.seed)
    if spec.checkpoint is not None and _is_taskdistill_checkpoint(Path(spec.checkpoint)):
        from taskdistill.engine.checkpoint import load_checkpoint

        model, meta = load_checkpoint(spec.checkpoint)
        if spec.name is not None and spec.name != meta["model"]["name"]:
            raise ConfigError(f"--encoder '{spec.name}' differs from the model in checkpoint '{spec.checkpoint}' "
                              f"({meta['model']['name']}); drop --encoder or pass the matching name")
        if spec.input_size is not None:
            model.preprocess = Preprocess(model.preprocess.mean, model.preprocess.std, spec.input_size)
    else:
        if spec.name is None:
            raise ConfigError("no encoder given: pass --encoder MODEL_NAME (and --pretrained for its weights), "
                              "or --checkpoint of a taskdistill model")
        model = create_model(spec.name, 0, pretrained=spec.pretrained, input_size=spec.input_size)
        if spec.checkpoint is not None:
            _load_backbone_state(model, Path(spec.checkpoint))
    return model.to(device).eval()


def pixel_signature(images: torch.Tensor) -> torch.Tensor:
    """uint8 `[B, C, H, W]` -> `[B, SIG_DIM]` unit vectors: a high-passed 32x32 grayscale thumbnail.

    The thumbnail of a fixed 64 px rendering, minus its 5x5 local mean, minus its mean: invariant to size
    and brightness/contrast. Measured on Fashion-MNIST (`docs/retrieval.md`): PNG, JPEG and resized copies of
    an image score >= 0.986 with it, while 99.9% of distinct images score < 0.97 with their closest other
    image; a plain (not high-passed) 16x16 thumbnail separates them far worse (silhouettes match). Flat
    images (no content) all map to the extra last axis, so they match each other and nothing else.
    """
    x = render(images, SIG_RENDER).mean(dim=1, keepdim=True)  # [B, 1, 64, 64] in [0, 1]
    thumb = F.adaptive_avg_pool2d(x, SIG_SIDE)
    thumb = thumb - F.avg_pool2d(thumb, SIG_BLUR, stride=1, padding=SIG_BLUR // 2, count_include_pad=False)
    thumb = thumb.flatten(1)
    thumb = thumb - thumb.mean(dim=1, keepdim=True)
    flat = thumb.std(dim=1) < FLAT_STD
    out = torch.zeros((len(images), SIG_DIM), dtype=torch.float32)
    out[:, :-1] = F.normalize(thumb, dim=1)
    out[flat] = 0.0
    out[flat, -1] = 1.0
    return out


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor, views: Views | None = None,
           device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """uint8 `[B, C, H, W]` -> L2-normalised pooled features `[B, D]` float32 (on the CPU); the encoder runs at
    `precision` (`engine.precision`; fp32: no autocast)."""
    return infer_batch(_encoded(encoder), images, device, precision, views).cpu()


def _encoded(encoder: nn.Module) -> Forward:
    def forward(x: torch.Tensor, views: Views | None) -> torch.Tensor:
        x = model_input(x, encoder.preprocess, views)
        feats = encoder.forward_head(encoder.forward_features(x), pre_logits=True).float()
        return F.normalize(feats.flatten(1), dim=1)

    return forward


def encode_set(encoder: nn.Module, images: Images, batch_size: int = 256, views: Views | None = None,
               device: torch.device | str = "cpu", desc: str | None = None, precision: str = "fp32") -> torch.Tensor:
    """`encode` over many images `[N, C, H, W]` in batches -> `[N, D]` (the shared batched-inference loop:
    batches read ahead, no per-batch sync)."""
    if len(images) == 0:
        return torch.empty(0, 0)
    with torch.no_grad():
        return batched_inference(_encoded(encoder), images, batch_size, device, precision, views, desc=desc or "encode",
                                 progress=desc is not None)


def shard_name(kind: Literal["emb", "sig"], i: int) -> str:
    return f"{kind}-{i:05d}.npy"


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def _shard_done(out: Path, i: int, rows: int) -> bool:
    e, s = out / shard_name("emb", i), out / shard_name("sig", i)
    if not (e.is_file() and s.is_file()):
        return False
    try:
        return np.load(e, mmap_mode="r").shape[0] == rows and np.load(s, mmap_mode="r").shape[0] == rows
    except (OSError, ValueError):
        return False


def _compatible(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    for key in ("format", "pool_fingerprint", "encoder", "weights_sha256", "shard_size", "load_size", "dtype", "count"):
        if old.get(key) != new.get(key):
            return key
    return None


def embed_pool(pool: ImagePool, spec: EncoderSpec, out: str | Path, shard_size: int = 4096, batch_size: int = 128,
               load_size: int | None = None, dtype: Literal["float16", "float32"] = "float16",
               device: torch.device | str = "cpu", on_bad_image: Literal["fail", "skip"] = "fail",
               force: bool = False) -> dict[str, Any]:
    """Embed every pool image into `out` (see the module doc); returns the final `meta.json` content."""
    from taskdistill.cache.teacher_outputs import weights_hash

    if shard_size <= 0 or batch_size <= 0:
        raise ConfigError(f"--shard-size and --batch-size must be positive, got {shard_size} and {batch_size}")
    out = Path(out)
    encoder = build_encoder(spec, device)
    size = load_size or encoder.preprocess.input_size
    n_shards = math.ceil(len(pool) / shard_size)
    meta: dict[str, Any] = {
        "format": FORMAT, "encoder": spec.to_dict(), "encoder_model": encoder.spec.name,
        "preprocess": encoder.preprocess.to_dict(), "weights_sha256": weights_hash(encoder),
        "pool": str(pool.root), "pool_kind": pool.kind, "pool_fingerprint": pool.fingerprint(),
        "count": len(pool), "shard_size": shard_size, "shards": n_shards, "load_size": size, "dtype": dtype,
        "signature": {"side": SIG_SIDE, "render": SIG_RENDER, "blur": SIG_BLUR, "dim": SIG_DIM}, "dim": None, "complete": False,
    }
    meta_path = out / "meta.json"
    meta["dim"] = distributed.on_main(lambda: _prepare_folder(out, pool, meta, force))
    pending = distributed.on_main(lambda: [i for i in range(n_shards) if not _shard_done(
        out, i, min((i + 1) * shard_size, len(pool)) - i * shard_size)])
    rank, world = distributed.rank(), distributed.world_size()
    mine = pending[rank::world]  # whole shards per rank: each shard file has one writer, batches as in one process
    rows = sum(min((i + 1) * shard_size, len(pool)) - i * shard_size for i in mine)
    bar = tqdm(total=rows, desc="embed pool" if world == 1 else f"embed pool (rank 0's {len(mine)} of {len(pending)} "
               f"shards)", unit="img", disable=None if rank == 0 else True)
    bad = 0
    for i in mine:
        lo, hi = i * shard_size, min((i + 1) * shard_size, len(pool))
        feats, sigs = [], []
        for batch in pool.batches(batch_size, size, lo, hi, on_bad_image):
            f = encode(encoder, batch.images, device=device)
            s = pixel_signature(batch.images)
            ok = torch.tensor(batch.ok)
            f[~ok], s[~ok] = 0.0, 0.0
            bad += int((~ok).sum())
            feats.append(f)
            sigs.append(s)
            bar.update(len(batch.entries))
        emb = torch.cat(feats).numpy().astype(dtype)
        _save_npy(out / shard_name("sig", i), torch.cat(sigs).numpy().astype(np.float16))
        _save_npy(out / shard_name("emb", i), emb)  # last: its presence marks the shard complete
        if meta["dim"] is None and world == 1:
            meta["dim"] = int(emb.shape[1])
            write_json(meta_path, meta)
    bar.close()
    bad = int(distributed.all_reduce_sum(torch.tensor([bad]))[0])
    meta = distributed.on_main(lambda: _finish_folder(out, meta, n_shards, bad))
    distributed.check_visible(meta_path, "embedding folder")
    return meta


def _prepare_folder(out: Path, pool: ImagePool, meta: dict[str, Any], force: bool) -> int | None:
    """Check or reset `out` for this pool and encoder, write ids / sources / locations / meta.json (rank 0).
    Returns the embedding dimension an earlier run recorded (None if unknown)."""
    meta_path = out / "meta.json"
    dim = None
    if meta_path.is_file() and not force:
        old = json.loads(meta_path.read_text())
        differs = _compatible(old, meta)
        if differs is not None:
            raise ConfigError(f"'{out}' holds embeddings made with another {differs.replace('_', ' ')}; pass --force "
                              f"to replace them, or choose another --out")
        dim = old.get("dim")
    elif force:
        for p in [*out.glob("emb-*.npy"), *out.glob("sig-*.npy"), *out.glob("index-*")]:
            p.unlink()
    for name, values in (("ids", [e.id for e in pool.entries]), ("sources", [e.source for e in pool.entries]),
                         ("locations", [e.location for e in pool.entries])):
        write_text(out / f"{name}.txt", "".join(json.dumps(v) + "\n" for v in values))
    write_json(meta_path, {**meta, "dim": dim})
    return dim


def _finish_folder(out: Path, meta: dict[str, Any], n_shards: int, bad: int) -> dict[str, Any]:
    """Mark the folder complete once every shard is there (rank 0, after all ranks wrote theirs)."""
    missing = [i for i in range(n_shards) if not (out / shard_name("emb", i)).is_file()]
    if missing:
        raise ConfigError(f"embedding shard(s) {missing[:5]} of '{out}' are missing after every rank finished; when "
                          f"ranks run on several nodes, --out must be on a filesystem that every node shares")
    if meta["dim"] is None:
        meta["dim"] = int(np.load(out / shard_name("emb", 0), mmap_mode="r").shape[1])
    meta.update(complete=True, unreadable_this_run=bad)
    write_json(out / "meta.json", meta)
    return meta


@dataclass
class Embeddings:
    """A finished embedding folder in memory: `vectors [N, D]` and `signatures [N, SIG_DIM]` float32, plus
    ids / sources / locations in pool order. `valid[i]` is False for images that could not be read."""

    vectors: np.ndarray
    signatures: np.ndarray
    ids: list[str]
    sources: list[str]
    locations: list[str]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def valid(self) -> np.ndarray:
        return np.linalg.norm(self.vectors, axis=1) > 0.5


def _lines(path: Path) -> list[str]:
    """One JSON string per line (older folders: the raw text of each line)."""
    return [json.loads(line) if line.startswith('"') else line for line in path.read_text().split("\n")[:-1]]


def load_embeddings(folder: str | Path) -> Embeddings:
    """Read a complete embedding folder; an unfinished one is an error that says how to finish it."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(f"'{folder}' is not an embedding folder (no meta.json); make one with `taskdistill embed`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ConfigError(f"'{meta_path}' is not a {FORMAT} file (format={meta.get('format')!r})")
    missing = [i for i in range(meta["shards"]) if not (folder / shard_name("emb", i)).is_file()]
    if not meta.get("complete") or missing:
        raise ConfigError(f"embeddings in '{folder}' are unfinished ({meta['shards'] - len(missing)} of "
                          f"{meta['shards']} shards); rerun the same `taskdistill embed` command to finish them")
    vecs: Sequence[np.ndarray] = [np.load(folder / shard_name("emb", i)) for i in range(meta["shards"])]
    sigs: Sequence[np.ndarray] = [np.load(folder / shard_name("sig", i)) for i in range(meta["shards"])]
    emb = Embeddings(vectors=np.ascontiguousarray(np.concatenate(vecs), dtype=np.float32),
                     signatures=np.ascontiguousarray(np.concatenate(sigs), dtype=np.float32),
                     ids=_lines(folder / "ids.txt"), sources=_lines(folder / "sources.txt"),
                     locations=_lines(folder / "locations.txt"), meta=meta)
    n = meta["count"]
    if not (len(emb.vectors) == len(emb.signatures) == len(emb.ids) == len(emb.sources) == len(emb.locations) == n):
        raise ConfigError(f"embedding folder '{folder}' is inconsistent (expected {n} rows in every file); "
                          f"rerun `taskdistill embed --force`")
    return emb
