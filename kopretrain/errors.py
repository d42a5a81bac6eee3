"""The one exception type for user mistakes (bad config, missing file).

The CLI prints a `UserError` as a single line and exits with status 2; anything else
is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: a bad config value, a missing input file."""


class ConfigError(UserError):
    """A config value is invalid. `key` is the field name (the CLI adds its dotted prefix)."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")
