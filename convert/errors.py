"""The converter's own user-facing error, kept apart from the runtime so convert/ stands alone."""


class ConversionError(ValueError):
    """A problem with the input checkpoint or the request, in one line naming the file at fault.

    The CLI turns it into `Error: ...` and exit code 1; nothing else of convert/ should reach a user.
    """
