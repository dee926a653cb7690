"""Command lines whose reader goes away (`... | head`) stop quietly, as Unix tools do."""

import os
import sys


def reader_gone() -> int:
    """Call on `BrokenPipeError`: sends the rest of stdout to /dev/null, so that Python's flush
    at exit raises no second error, and returns the exit status 1."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1
