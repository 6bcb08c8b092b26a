"""Exceptions shared by both sides. The CLI turns them into one-line messages."""


class UetraceError(Exception):
    """A failure the user can act on; `exit_code` is what the CLI exits with."""

    exit_code = 1


class BadInputError(UetraceError):
    """The input (archive, option, SQL) is unusable: exit code 2, like a usage error."""

    exit_code = 2
