"""Caches of teacher outputs, keyed by content hashes."""

from taskdistill.cache.teacher_outputs import cache_key, cached_teacher_logits, weights_hash

__all__ = ["cache_key", "cached_teacher_logits", "weights_hash"]
