"""The one exception type the CLI turns into a one-line message (no traceback)."""


class MentalEdgeError(Exception):
    """A user-facing problem: bad input, missing file, unsupported model.

    The message is one line that names the file, row or field at fault.
    """
