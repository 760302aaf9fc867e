"""Exceptions that the CLI turns into one-line errors (and a non-zero exit)."""


class DvpError(Exception):
    """A user-facing error: bad input, bad config or a schema violation.

    The message must be one line that names the file (or setting) and the problem.
    """


class InputError(DvpError):
    """An input file is missing, corrupt, truncated or of the wrong kind."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        # exceptions travel back from worker processes pickled; the default would call
        # InputError(message) and fail, which breaks a process pool
        return (InputError, (self.path, self.problem))


class SchemaError(DvpError):
    """A table does not conform to its dvp schema."""
