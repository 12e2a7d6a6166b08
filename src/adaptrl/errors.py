"""User-facing errors: the CLI turns these into one line on stderr and exit code 2."""


class AdaptrlError(Exception):
    """A problem the user can fix (bad config, missing run, corrupted checkpoint)."""


class ConfigError(AdaptrlError):
    """A config key, type or value is wrong; the message says which and how to fix it."""


class RunError(AdaptrlError):
    """A run directory or checkpoint is missing, incomplete or corrupted."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training; the message says what was saved and how to resume."""
