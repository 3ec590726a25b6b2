"""taskdistill: turn a large vision foundation model into a small, fast, task-specific model."""

from taskdistill.version import __version__

__all__ = ["__version__"]
