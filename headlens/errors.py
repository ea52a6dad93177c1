"""The one error type headlens raises for bad input."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HeadlensError(ValueError):
    """Bad input or an unrecoverable condition, with a message that says what to do.

    The CLI prints the message on one line (no traceback) and exits with status 2.
    """


def closest(name: str, options: Iterable[str], n: int = 3) -> str:
    """Return 'did you mean ...? available: ...' text for an unknown ``name``."""
    options = sorted(options)
    near = difflib.get_close_matches(name, options, n=n, cutoff=0.4)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    return f"{hint}available: {', '.join(options)}"
