"""The one error type the CLI turns into a single clear line and a non-zero exit."""


class UserError(Exception):
    """Bad input or an unusable environment, reported to the user without a traceback."""
