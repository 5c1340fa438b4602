"""The one exception type users see as a one-line message (exit status 2)."""


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
