"""The one exception type for mistakes in what the user asked for, and the hint for a mistyped name."""

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: an unknown name, a value out of range, a missing or mismatched file.

    The message is one line that names the problem and the fix. The CLI prints it without a
    traceback and exits with status 2. Bugs in the kit raise ordinary exceptions instead.
    """


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"did you mean 'rslad'? " when one of `known` is close to `name` (a typo), else "": the hint an
    unknown-name message gives before the list of known names."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}? " if close else ""
