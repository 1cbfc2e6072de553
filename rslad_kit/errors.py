"""The one exception type for mistakes in what the user asked for, the hint for a mistyped name, and
how a warning reaches the user."""

import difflib
import sys
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


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` for the command line and its worker processes: a warning is one line,
    written above any progress bar (tqdm's lock) instead of through it, without a source excerpt."""
    from tqdm import tqdm

    tqdm.write(f"rslad-kit: warning: {message}", file=file or sys.stderr)
