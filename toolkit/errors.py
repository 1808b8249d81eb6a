"""One exception type for everything a user can fix: the CLI prints its message as one sentence."""


class SpotsweepError(Exception):
    """A problem with the user's input or configuration.

    The message is a single sentence that names the file, the field and the fix;
    the CLI prints it without a traceback and exits with status 2.
    """


def printable(text: str) -> str:
    """`text` with control characters escaped (a newline as \\n), so that a key or value a user typed
    cannot break the one-line message that quotes it."""
    return "".join(repr(char)[1:-1] if ord(char) < 32 or ord(char) == 127 else char for char in text)
