"""The one exception type that means "the user's input is wrong"."""


class BenchmarkError(Exception):
    """Bad input: the CLI prints the message as one line and exits with status 2."""
