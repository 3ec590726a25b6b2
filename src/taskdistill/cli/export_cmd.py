"""`taskdistill export CHECKPOINT --format onnx | hf | torchscript --out DIR`: a checked, shippable student.

Every export is compared with the PyTorch checkpoint on real test images (the checkpoint's own data, decoded
by its recorded policy) and fails if the outputs differ by more than 1e-4 or any top-1 class differs.
`--quantize int8` (onnx) adds an int8 copy calibrated on transfer images and prints its accuracy and
latency change. Files appear in DIR only when the export and its check succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskdistill.cli.common import add_config_args, config_for_checkpoint

if TYPE_CHECKING:
    import torch
    from torch import nn

    from taskdistill.config.schema import RunConfig
    from taskdistill.data.image_rows import Images


EXPORT_FILES = ("model.onnx", "model.int8.onnx", "model.pt", "config.json", "model.safetensors", "README.md",
                "export.json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX, a timm/Hugging Face folder or TorchScript, "
                                      "checked against PyTorch on real images")
    p.add_argument("checkpoint", help="checkpoint path (.safetensors or its stem)")
    add_config_args(p)
    p.add_argument("--format", choices=["onnx", "hf", "torchscript"], default="onnx")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="onnx: take uint8 [B, H, W, C] images and resize/normalise inside the graph")
    p.add_argument("--quantize", choices=["int8"], default=None, help="onnx: also write an int8 model")
    p.add_argument("--check-images", type=int, default=1000, help="test images the export is checked on")
    p.add_argument("--calibration-images", type=int, default=256, help="int8: transfer images to calibrate on")
    p.set_defaults(func=export)


def check_images(cfg: RunConfig, meta: dict[str, Any], n: int) -> tuple[Images, torch.Tensor | None]:
    """The first `n` test images of the checkpoint's data (decoded by its policy) and their labels (None for
    per-pixel tasks: those are compared on their logits only)."""
    import torch

    from taskdistill.data.image_rows import take
    from taskdistill.data.image_set import ImageSet
    from taskdistill.kinds import kind_of_checkpoint

    test = kind_of_checkpoint(meta).test_set(cfg, meta)
    keep = torch.arange(min(n, len(test)))
    return take(test.images, keep), test.labels[keep] if isinstance(test, ImageSet) else None


def calibration_images(cfg: RunConfig, meta: dict[str, Any], n: int) -> Images:
    """`n` transfer-set images (a seeded random choice), for int8 calibration."""
    import torch

    from taskdistill.data.image_rows import take
    from taskdistill.data.image_set import ImageSet
    from taskdistill.kinds import kind_of_checkpoint

    data = kind_of_checkpoint(meta).prepare(cfg)
    pool = data.transfer if isinstance(data.transfer, ImageSet) else data.labeled
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))[: min(n, len(pool))]
    return take(pool.images, torch.sort(pick).values)


def _export_model(model: nn.Module, meta: dict[str, Any], uint8: bool) -> tuple[nn.Module, torch.Tensor]:
    """The module to export and an example input for it."""
    import torch

    from taskdistill.engine.checkpoint import decode_policy_of
    from taskdistill.export.input_graph import WithInputPipeline

    size = int(meta["preprocess"]["input_size"])
    if not uint8:
        return model, torch.zeros(2, 3, size, size)
    policy = decode_policy_of(meta)
    side, channels = (policy.size, policy.channels) if policy else (size, 3)
    return WithInputPipeline(model, model.preprocess, channels).eval(), torch.zeros(2, side, side, channels,
                                                                                  dtype=torch.uint8)


def export(args: argparse.Namespace) -> int:
    import torch

    from taskdistill.engine.checkpoint import decode_policy_of, load_checkpoint
    from taskdistill.engine.device import set_threads
    from taskdistill.errors import TaskDistillError
    from taskdistill.export.parity import MAX_ABS_DIFF, compare

    set_threads(None)
    model, meta = load_checkpoint(args.checkpoint)
    model = model.eval()
    cfg = config_for_checkpoint(args, meta)
    uint8 = bool(args.with_preprocessing)
    if (uint8 or args.quantize) and args.format != "onnx":
        raise TaskDistillError("--with-preprocessing and --quantize are options of --format onnx")
    images, labels = check_images(cfg, meta, args.check_images)
    out = Path(args.out)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    record: dict[str, Any] = {"format": args.format, "checkpoint": str(args.checkpoint), "stage": meta.get("stage"),
                              "model": meta["model"], "class_names": meta["class_names"],
                              "preprocess": meta["preprocess"], "decode": meta.get("decode"),
                              "uint8_input": uint8}
    try:
        target, example = _export_model(model, meta, uint8)
        if args.format == "onnx":
            from taskdistill.export.onnx_file import OnnxModel, export_onnx

            export_onnx(target, partial / "model.onnx", example, uint8)
            runner = OnnxModel(partial / "model.onnx").run
            files = ["model.onnx"]
        elif args.format == "torchscript":
            from taskdistill.export.torchscript_file import export_torchscript, load_torchscript

            export_torchscript(target, partial / "model.pt", example)
            scripted = load_torchscript(partial / "model.pt")
            runner = lambda x: scripted(torch.from_numpy(x)).float().numpy()  # noqa: E731
            files = ["model.pt"]
        else:
            from taskdistill.export.hf_folder import export_hf, load_with_timm
            from taskdistill.export.model_card import model_card

            export_hf(model, meta, decode_policy_of(meta), partial, model_card(meta, Path(args.checkpoint), model))
            loaded = load_with_timm(partial)
            runner = lambda x: loaded(torch.from_numpy(x)).float().numpy()  # noqa: E731
            files = ["config.json", "model.safetensors", "README.md"]
        parity = compare(model, runner, images, uint8, labels)
        record["parity"] = parity.to_dict()
        print(f"checked on {parity.images} test images: max |logit difference| {parity.max_abs_diff:.2e}, "
              f"top-1 agreement {100 * parity.top1_agreement:.2f} %")
        if not parity.ok():
            raise TaskDistillError(
                f"the {args.format} export does not match the PyTorch model (max |difference| "
                f"{parity.max_abs_diff:.2e} > {MAX_ABS_DIFF:g} or top-1 agreement "
                f"{100 * parity.top1_agreement:.2f} % < 100 %); nothing was written to '{out}'")
        if args.quantize:
            record["int8"] = _quantize(partial, model, cfg, meta, images, labels, uint8, args.calibration_images)
            files.append("model.int8.onnx")
        (partial / "export.json").write_text(json.dumps(record, indent=2) + "\n")
        files.append("export.json")
        out.mkdir(parents=True, exist_ok=True)
        for stale in set(EXPORT_FILES) - set(files):  # an earlier export's files would describe other weights
            (out / stale).unlink(missing_ok=True)
        for f in files:
            os.replace(partial / f, out / f)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"wrote {', '.join(files)} to {out}")
    return 0


def _quantize(folder: Path, model: nn.Module, cfg: RunConfig, meta: dict[str, Any], images: Images, labels: torch.Tensor | None,
              uint8: bool, n_calibration: int) -> dict[str, Any]:
    """Write model.int8.onnx; its accuracy and batch-1 latency against the float32 ONNX model."""
    import torch

    from taskdistill.engine.latency import measure_latency
    from taskdistill.export.onnx_file import OnnxModel
    from taskdistill.export.parity import compare, exported_input
    from taskdistill.export.quantize import quantize_int8

    calibration = calibration_images(cfg, meta, n_calibration)
    quantize_int8(folder / "model.onnx", folder / "model.int8.onnx", model, calibration, uint8)
    fp32, int8 = OnnxModel(folder / "model.onnx"), OnnxModel(folder / "model.int8.onnx")
    q = compare(model, int8.run, images, uint8, labels)
    one = exported_input(images[torch.arange(1)], model, uint8)
    many = exported_input(images[torch.arange(min(64, len(images)))], model, uint8)
    lat32 = measure_latency(fp32.run, one, many, len(many))
    lat8 = measure_latency(int8.run, one, many, len(many))
    result = {"calibration_images": len(calibration), "top1_agreement_with_fp32_pytorch": q.top1_agreement,
              "fp32_top1": q.reference_top1, "int8_top1": q.exported_top1,
              "fp32_onnx_latency": lat32.to_dict(), "int8_onnx_latency": lat8.to_dict()}
    change = "" if q.reference_top1 is None else (
        f"top-1 {100 * q.reference_top1:.2f} % -> {100 * q.exported_top1:.2f} % "  # type: ignore[operator]
        f"({100 * (q.exported_top1 - q.reference_top1):+.2f} points), ")
    print(f"int8: {change}batch-1 p50 {lat32.p50_ms:.3f} -> {lat8.p50_ms:.3f} ms, "
          f"throughput {lat32.throughput:,.0f} -> {lat8.throughput:,.0f} img/s (calibrated on {len(calibration)} "
          f"transfer images)")
    return result
