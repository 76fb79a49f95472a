"""Exception types that map to the CLI's exit codes."""


class InputError(Exception):
    """Bad input (a file, a flag, a checkpoint): exit code 2, one line, nothing written.

    The message must name the file or flag and the mismatch.
    """

    exit_code = 2


class VerificationError(Exception):
    """The exported SavedModel does not compute what the checkpoint computes: exit code 3."""

    exit_code = 3
