"""The one exception type users see as a one-line message (exit status 2), and its warning."""

import sys
import warnings


class CifarlabError(Exception):
    """A problem the user can fix: its message names the problem and the fix.

    The CLI prints it as one line on stderr and exits with status 2; the Python
    API lets it propagate. Raise it for bad input, never for bugs.
    """


class CifarlabWarning(UserWarning):
    """Something the user should know that does not stop the work (``cifarlab: warning:``)."""


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line, for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0].rstrip(":") if text else type(err).__name__


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning``: cifarlab's own warnings as one ``cifarlab: warning:`` line
    (the CLI and sweep workers install it); others as Python shows them."""
    if issubclass(category, CifarlabWarning):
        print(f"cifarlab: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
