"""Errors the user can act on: each names the bad input and the fix."""


class TaskDistillError(Exception):
    """Base class for errors caused by user input (paths, configs, data, checkpoints)."""


class ConfigError(TaskDistillError):
    """A config file or override is invalid."""


class DataError(TaskDistillError):
    """A dataset, image or split cannot be used as asked."""


class CheckpointError(TaskDistillError):
    """A checkpoint is missing, unreadable or does not fit the data."""


class RunFolderError(TaskDistillError):
    """A run folder exists or is incomplete and the user did not say what to do."""
