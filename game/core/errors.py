"""Errors that mean "the input is wrong", as opposed to a bug.

The command line turns a ``UserError`` into one clear line on stderr and exit code 2, never a
traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the person: a missing file, a wrong folder, mismatched weights."""

    exit_code = 2
