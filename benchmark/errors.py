"""The one exception type that means "the user's input is wrong"."""


class BenchmarkError(Exception):
    """Bad input: the CLI prints the message as one line and exits with status 2."""


class TaskTimeout(BaseException):
    """A task ran past its --task-timeout. Not an Exception, so that catch-alls (the runner's, the defense guard's
    around user hooks) let it through to the job that set the clock."""
