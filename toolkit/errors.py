"""One exception type for everything a user can fix: the CLI prints its message as one sentence."""


class SpotsweepError(Exception):
    """A problem with the user's input or configuration.

    The message is a single sentence that names the file, the field and the fix;
    the CLI prints it without a traceback and exits with status 2.
    """
