"""Task-Driven Model Reprogramming (TDMR), see docs/tdmr.md.

Part 1, reprogramming: a frozen teacher, a learned visual prompt in front of it and a label map behind it,
trained on the target task's labels. Part 2, progressive distillation: the student, with a temporary proxy
head, matches the reprogrammed teacher's source-class outputs and then its target-class outputs, under a
weight schedule. The stages that chain them live in `taskdistill.reprogram.stages`.
"""

from taskdistill.reprogram.build import RemappingTask, build_reprogrammed, make_prompt
from taskdistill.reprogram.label_mapping import (
    LinearLabelMap,
    MappedHead,
    frequency_label_mapping,
    iterative_label_mapping,
)
from taskdistill.reprogram.progressive import ProxyDistillTask, ProxyStudent
from taskdistill.reprogram.reprogrammed import (
    OUTPUT_KINDS,
    ReprogrammedTeacher,
    ReprogramTask,
    predict_outputs,
    source_probabilities,
)
from taskdistill.reprogram.schedule import WeightSchedule, planned_steps, task_weight
from taskdistill.reprogram.visual_prompt import FullImagePrompt, NoPrompt, PaddingPrompt, VisualPrompt

__all__ = [
    "OUTPUT_KINDS",
    "FullImagePrompt",
    "LinearLabelMap",
    "MappedHead",
    "NoPrompt",
    "PaddingPrompt",
    "ProxyDistillTask",
    "ProxyStudent",
    "RemappingTask",
    "ReprogramTask",
    "ReprogrammedTeacher",
    "VisualPrompt",
    "WeightSchedule",
    "build_reprogrammed",
    "frequency_label_mapping",
    "iterative_label_mapping",
    "make_prompt",
    "planned_steps",
    "predict_outputs",
    "source_probabilities",
    "task_weight",
]
