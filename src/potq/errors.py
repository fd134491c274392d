"""Two exception types the CLI turns into one line on stderr: a user mistake (exit 2), a failure (exit 1)."""


class UserError(Exception):
    """Bad input: a path, an argument, a file. Exit status 2."""


class StepFailed(Exception):
    """Something broke that is not the user's mistake; the message names where. Exit status 1."""
