"""Single-stage verbs: `teacher-finetune`, `distill`, `finetune`, `evaluate`. They work in the run folder
of the config (`<output_dir>/<name>/`), so running them in order equals `taskdistill run`."""

from __future__ import annotations

import argparse
import json

from taskdistill.cli.common import add_config_args, config_for_checkpoint, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    for verb, stages, helptext in (
        ("teacher-finetune", ("teacher",), "stage 1: finetune the pretrained teacher with a task head"),
        ("distill", ("student_distilled",), "stage 2: distill the teacher's predictions into the student"),
        ("finetune", ("student",), "stage 3: finetune the distilled student on the labels"),
    ):
        p = sub.add_parser(verb, help=helptext)
        add_config_args(p)
        p.add_argument("--redo", action="store_true", help="run the stage again even if it finished before")
        if verb in ("distill", "finetune"):
            p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the run folder's; finetune "
                                                           "reads it when distill.finetune_anchor > 0)")
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

    from taskdistill.pipelines.run import run
    from taskdistill.pipelines.run_folder import forget_stage

    cfg = config_from_args(args)
    folder = Path(cfg.output_dir) / cfg.name
    if args.redo:
        for stage in args.stages:
            forget_stage(folder, stage)
    if "student" in args.stages and cfg.distill.finetune_anchor > 0 and not args.teacher:
        from taskdistill.errors import ConfigError
        from taskdistill.pipelines.run_folder import read_run_state

        if "teacher" not in read_run_state(folder).get("stages", {}):
            raise ConfigError(f"distill.finetune_anchor={cfg.distill.finetune_anchor} keeps distilling the teacher's "
                              f"outputs in stage 3, but '{folder}' has no finished teacher; pass --teacher CKPT or "
                              f"run `taskdistill teacher-finetune` with the same config first")
    given = {name: path for name, path in (("teacher", getattr(args, "teacher", None)),
                                           ("student_distilled", getattr(args, "student", None))) if path}
    result = run(cfg, mode="resume", methods=["task-oriented"], only=args.stages, given=given)
    print(f"\nrun folder: {result.path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from taskdistill.engine.checkpoint import load_checkpoint, read_meta
    from taskdistill.engine.device import resolve_device, set_threads
    from taskdistill.kinds import kind_of_checkpoint
    from taskdistill.results import METRICS_SCHEMA

    meta = read_meta(args.checkpoint)
    cfg = config_for_checkpoint(args, meta)  # no config given: the data the checkpoint was trained on
    kind = kind_of_checkpoint(meta, cfg)
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    test = kind.test_set(cfg, meta)
    model, _ = load_checkpoint(args.checkpoint, expect_classes=test.class_names)
    metrics = kind.evaluate(model.to(device), test, device, cfg.eval_batch_size, "evaluate")
    if args.json:
        print(json.dumps({"schema": METRICS_SCHEMA, "task": kind.name, **metrics.to_json()}, indent=2))
        return 0
    print(f"{meta['model']['name']} ({meta['stage']}): {kind.summary(metrics)}  on {metrics.num_images} test images")
    for name, value in metrics.per_class.items():
        print(f"  {name:<20} " + ("     -" if value is None else f"{100 * value:6.2f}%"))
    return 0
