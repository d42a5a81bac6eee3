"""The exception types for what the CLI reports in one line: user mistakes (bad config, missing
file) and runs that failed.

The CLI prints a `UserError` as a single line and exits with status 2, a `RunFailed` (a run
that started and failed) as a single line with status 1; anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: a bad config value, a missing input file."""


class ConfigError(UserError):
    """A config value is invalid. `key` is the field name (the CLI adds its dotted prefix)."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


class RunFailed(Exception):
    """A run that started and then failed for good (Ray Train gave up after scale.max_failures):
    one line saying why and how to go on; the details are in the run's logs."""
