"""Exception types that map to the CLI's exit codes, and reading input files under them."""

import os


class InputError(Exception):
    """Bad input (a file, a flag, a checkpoint): exit code 2, one line, nothing written.

    The message must name the file or flag and the mismatch, in one line of at most 300
    characters; `detail` holds what a longer listing would say (the CLIs print it with --verbose).
    """

    exit_code = 2

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail

    def full_message(self) -> str:
        return str(self) + (f"\n{self.detail}" if self.detail else "")


def listing(names: list[str], shown: int = 3) -> str:
    """`a, b, c and 9 more`: a list that keeps an error line short."""
    names = list(names)
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


class WriteError(Exception):
    """The export could not be written (disk full, file too large, I/O error): exit code 4.

    Nothing is published and the temporary directory is removed.
    """

    exit_code = 4


class VerificationError(Exception):
    """The exported SavedModel does not compute what the checkpoint computes: exit code 3."""

    exit_code = 3


def read_input_text(path: str, flag: str) -> str:
    """The UTF-8 text of the file a flag names; every problem is an InputError naming it."""
    if not os.path.isfile(path):
        raise InputError(f"{flag}: {path} does not exist or is not a file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"{flag}: cannot read {path}: {e.strerror}") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{os.path.basename(path)}: not UTF-8 text ({e.reason} at byte {e.start})") from e
