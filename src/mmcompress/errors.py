"""Errors that reach the user as one line and a non-zero exit status, never as a traceback."""


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""

    exit_code = 1


class ConfigError(UserError):
    """A bad override, an unknown option or an invalid config value (exit status 2, like a usage error)."""

    exit_code = 2
