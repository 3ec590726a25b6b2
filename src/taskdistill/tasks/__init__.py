"""Tasks: what each method computes on a batch and which loss it minimises."""

from taskdistill.tasks.distill import DistillTask
from taskdistill.tasks.feature_distill import FeatureDistillTask, FeatureProjector, make_projector
from taskdistill.tasks.linear_probe import LinearProbeTask
from taskdistill.tasks.supervised import SupervisedTask

__all__ = ["DistillTask", "FeatureDistillTask", "FeatureProjector", "LinearProbeTask", "SupervisedTask",
           "make_projector"]
