"""Moved to `taskdistill.atomic` (the bottom layer, so the data layer can use it); kept while imports move."""

from taskdistill.atomic import *  # noqa: F403
from taskdistill.atomic import __all__  # noqa: F401
