"""The one exception type for mistakes in what the user asked for."""


class UserError(Exception):
    """Bad input: an unknown name, a value out of range, a missing or mismatched file.

    The message is one line that names the problem and the fix. The CLI prints it without a
    traceback and exits with status 2. Bugs in the kit raise ordinary exceptions instead.
    """
