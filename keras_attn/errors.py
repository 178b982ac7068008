"""The one exception type that reaches a user as a single line."""


class UserError(ValueError):
    """Bad input from the user (flags, data, files): printed as one line, exit status 2."""
