"""Caches of teacher outputs, keyed by content hashes."""

from taskdistill.cache.soft_labels import bytes_per_view, compress_topk, expand_topk
from taskdistill.cache.teacher_outputs import (
           Storage,
           TeacherOutputs,
           cache_key,
           cached_teacher_outputs,
           weights_hash,
)

__all__ = ["Storage", "TeacherOutputs", "bytes_per_view", "cache_key", "cached_teacher_outputs", "compress_topk",
           "expand_topk", "weights_hash"]
