"""Two exception types the CLI turns into one line on stderr: a user mistake (exit 2), a failure (exit 1)."""


class UserError(Exception):
    """Bad input: a path, an argument, a file. Exit status 2."""


def one_line(message: object) -> str:
    """A message as the one line the CLI prints: a library's multi-line text (torch.load's advice, for one)
    keeps its first line."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[0] + (" ..." if len(lines) > 1 else "") if lines else ""


class StepFailed(Exception):
    """Something broke that is not the user's mistake; the message names where. Exit status 1."""
