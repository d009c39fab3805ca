"""Exceptions with messages a user can act on.

Every error names where the problem is (file, row, key) and what was expected,
so the CLI can print it without a traceback.
"""


class RadError(Exception):
    """Base class for errors the CLI reports as a one-line message."""


class ConfigError(RadError, ValueError):
    """A configuration key is unknown, mistyped or has an impossible value."""


class DataError(RadError, ValueError):
    """A data file is missing a column, has a wrong type, or cannot be read."""
