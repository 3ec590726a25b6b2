"""Model reprogramming (the first half of TDMR): a frozen teacher, a learned visual prompt in front of it
and a label map behind it, trained on the target task's labels. See docs/tdmr.md."""

from taskdistill.reprogram.label_mapping import (
    LinearLabelMap,
    MappedHead,
    frequency_label_mapping,
    iterative_label_mapping,
)
from taskdistill.reprogram.reprogrammed import ReprogrammedTeacher, ReprogramTask, source_probabilities
from taskdistill.reprogram.visual_prompt import FullImagePrompt, PaddingPrompt, VisualPrompt

__all__ = [
    "FullImagePrompt",
    "LinearLabelMap",
    "MappedHead",
    "PaddingPrompt",
    "ReprogramTask",
    "ReprogrammedTeacher",
    "VisualPrompt",
    "frequency_label_mapping",
    "iterative_label_mapping",
    "source_probabilities",
]
