"""Tasks: what each method computes on a batch and which loss it minimises."""

from taskdistill.tasks.distill import DistillTask
from taskdistill.tasks.supervised import SupervisedTask

__all__ = ["DistillTask", "SupervisedTask"]
