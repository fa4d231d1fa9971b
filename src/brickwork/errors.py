"""Exceptions for user mistakes, which the CLI prints as one line and exit code 2.

Anything else that escapes is a bug in brickwork or in user code and keeps its
traceback.
"""


class BrickworkError(Exception):
    """A problem the user can fix; the message says what was given and what to do."""


class ConfigError(BrickworkError, ValueError):
    """The config file or an override is invalid."""


class DataError(BrickworkError):
    """Input data is missing or unreadable."""


class CheckpointError(BrickworkError):
    """A checkpoint or run folder is missing, corrupt or incompatible."""


class ProjectError(BrickworkError):
    """`brickwork new` / `add`: a bad name, a file that exists, or no project here."""
