"""taskdistill: turn a large vision foundation model into a small, fast, task-specific model.

The Python API mirrors the CLI:

    from taskdistill import RunConfig, load_config, run, run_sweep
    cfg = load_config(RunConfig, "my.yaml", ["distill.temperature=4"])
    result = run(cfg)                        # taskdistill run my.yaml --set distill.temperature=4
    records = run_sweep(cfg, ["task-oriented", "scratch"], budgets=[10], seeds=[0, 1, 2], folder="sweeps/t4")
"""

from taskdistill.version import __version__

__all__ = ["RunConfig", "__version__", "create_model", "create_student", "create_teacher", "load_checkpoint",
           "load_config", "run", "run_sweep", "run_task_oriented"]


def __getattr__(name: str):  # lazy, so `import taskdistill` stays cheap
    if name in ("RunConfig", "load_config"):
        from taskdistill import config

        return getattr(config, name)
    if name in ("create_model", "create_student", "create_teacher"):
        from taskdistill import models

        return getattr(models, name)
    if name == "load_checkpoint":
        from taskdistill.engine.checkpoint import load_checkpoint

        return load_checkpoint
    if name in ("run", "run_task_oriented"):  # run_task_oriented: the name before `run.methods`
        from taskdistill.pipelines.run import run

        return run
    if name == "run_sweep":
        from taskdistill.pipelines.sweep import run_sweep

        return run_sweep
    raise AttributeError(name)
