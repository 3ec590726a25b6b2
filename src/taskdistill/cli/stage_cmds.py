"""Single-stage verbs: `teacher-finetune`, `distill`, `finetune`, `evaluate`. They work in the run folder
of the config (`<output_dir>/<name>/`), so running them in order equals `taskdistill run`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from taskdistill.cli.common import add_config_args, config_for_checkpoint, config_from_args

if TYPE_CHECKING:
    import torch

    from taskdistill.config.schema import RunConfig


def register(sub: argparse._SubParsersAction) -> None:
    for verb, stages, helptext in (
        ("teacher-finetune", ("teacher",), "stage 1: finetune the pretrained teacher with a task head"),
        ("distill", ("student_distilled",), "stage 2: distill the teacher's predictions into the student"),
        ("finetune", ("student",), "stage 3: finetune the distilled student on the labels"),
    ):
        p = sub.add_parser(verb, help=helptext)
        add_config_args(p)
        p.add_argument("--redo", action="store_true", help="run the stage again even if it finished before")
        if verb == "distill":
            p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the run folder's)")
        if verb == "finetune":
            p.add_argument("--student", default=None, help="student checkpoint (default: the run's distilled one)")
        p.set_defaults(func=_stage_verb, stages=stages)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on the test split of a config's dataset "
                                        "(no config: the dataset the checkpoint was trained on)")
    p.add_argument("checkpoint", help="checkpoint path (.safetensors or its stem)")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="print all metrics as JSON")
    p.set_defaults(func=_evaluate)


def _stage_verb(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taskdistill.pipelines.run_folder import forget_stage
    from taskdistill.pipelines.task_oriented import run_task_oriented

    cfg = config_from_args(args)
    folder = Path(cfg.output_dir) / cfg.name
    if args.redo:
        for stage in args.stages:
            forget_stage(folder, stage)
    run = run_task_oriented
    if cfg.task == "segmentation":
        from taskdistill.pipelines.seg_run import run_segmentation as run
    result = run(cfg, mode="resume", stages=args.stages, teacher_checkpoint=getattr(args, "teacher", None),
                 student_checkpoint=getattr(args, "student", None))
    print(f"\nrun folder: {result.path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from taskdistill.engine.checkpoint import decode_policy_of, load_checkpoint, read_meta
    from taskdistill.engine.device import resolve_device, set_threads
    from taskdistill.pipelines.prepare import load_size_for, load_task_data
    from taskdistill.pipelines.stages import evaluate_model

    meta = read_meta(args.checkpoint)
    cfg = config_for_checkpoint(args, meta)  # no config given: the data the checkpoint was trained on
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    if cfg.task == "segmentation" or meta.get("task") == "segmentation":
        return _evaluate_segmentation(args, cfg, device)
    # decode test images exactly as the checkpoint's training images were (its recorded policy)
    policy = decode_policy_of(meta, cfg.data.load_size or load_size_for(cfg))
    data = load_task_data(cfg.data, policy)
    model, _ = load_checkpoint(args.checkpoint, expect_classes=data.class_names)
    metrics = evaluate_model(model.to(device), data.test, device, cfg.eval_batch_size, "evaluate")
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{meta['model']['name']} ({meta['stage']}): top-1 {100 * metrics['top1']:.2f}%  "
              f"macro {100 * metrics['macro_accuracy']:.2f}%  on {metrics['num_images']} test images")
        for name, acc in metrics["per_class_accuracy"].items():
            print(f"  {name:<20} {100 * acc:6.2f}%")
    return 0


def _evaluate_segmentation(args: argparse.Namespace, cfg: RunConfig, device: torch.device) -> int:
    from taskdistill.engine.checkpoint import load_checkpoint
    from taskdistill.errors import ConfigError
    from taskdistill.pipelines.seg_prepare import load_seg_task_data
    from taskdistill.pipelines.seg_stages import evaluate_seg_model

    if cfg.task != "segmentation":
        raise ConfigError(f"'{args.checkpoint}' is a segmentation checkpoint; evaluate it with a segmentation config "
                          f"(e.g. seg-composite, or --set task=segmentation with the matching data settings)")
    data = load_seg_task_data(cfg)
    model, meta = load_checkpoint(args.checkpoint, expect_classes=data.class_names)
    metrics = evaluate_seg_model(model.to(device), data.test, device, cfg.eval_batch_size, "evaluate")
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{meta['model']['name']} ({meta['stage']}): mIoU {100 * metrics['miou']:.2f}%  pixel accuracy "
              f"{100 * metrics['pixel_accuracy']:.2f}%  on {metrics['num_images']} test images")
        for name, iou in metrics["per_class_iou"].items():
            print(f"  {name:<20} " + ("     -" if iou is None else f"{100 * iou:6.2f}%"))
    return 0
