"""Typed configs filled from YAML and `--set` overrides."""

from taskdistill.config.load import dump_yaml, from_dict, load_config, to_dict
from taskdistill.config.schema import (
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    StudentConfig,
    TeacherConfig,
    TransferConfig,
)

__all__ = [
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "StudentConfig",
    "TeacherConfig",
    "TransferConfig",
    "dump_yaml",
    "from_dict",
    "load_config",
    "to_dict",
]
