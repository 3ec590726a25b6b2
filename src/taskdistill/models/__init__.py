"""Models: a registry over timm, open_clip, Hugging Face and packaged weights, all with one interface."""

from taskdistill.models.base import Preprocess, TaskModel
from taskdistill.models.registry import ModelSpec, create_model, create_student, create_teacher, rebuild_model

__all__ = ["ModelSpec", "Preprocess", "TaskModel", "create_model", "create_student", "create_teacher", "rebuild_model"]
