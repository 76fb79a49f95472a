"""Progress of a long export, on stderr: a line per stage, and while the weights are read a bar
when stderr is a terminal (a count when it is a log). stdout is left to the summary, whose last
line is the version path that scripts read."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

import numpy as np


class Progress:
    """Reports stages as `<program>: <stage>`; `silent()` reports nothing (library use, --quiet)."""

    def __init__(self, program: str = "bert-export", stream: TextIO | None = None, enabled: bool = True):
        self._program = program
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._tty = enabled and hasattr(self._stream, "isatty") and self._stream.isatty()

    @classmethod
    def silent(cls) -> "Progress":
        return cls(enabled=False)

    def stage(self, what: str) -> None:
        if self._enabled:
            print(f"{self._program}: {what}", file=self._stream, flush=True)

    def counting(self, read: Callable[[str], np.ndarray], total: int, what: str = "reading weights"
                 ) -> Callable[[str], np.ndarray]:
        """`read` (one weight by name), reporting each call: a bar redrawn in place on a terminal;
        in a log, the count at every quarter and at the end."""
        if not self._enabled:
            return read
        done, size, start = 0, 0, time.monotonic()
        marks = {max(1, total * k // 4) for k in (1, 2, 3, 4)}

        def counted(name: str) -> np.ndarray:
            nonlocal done, size
            array = read(name)
            done, size = done + 1, size + array.nbytes
            line = (f"{self._program}: {what}: {done}/{total} tensors, {size / 1e6:,.1f} MB, "
                    f"{time.monotonic() - start:.1f}s")
            if self._tty:
                filled = 24 * done // max(total, 1)
                bar = "#" * filled + "." * (24 - filled)
                print(f"\r{line} [{bar}]", end="\n" if done >= total else "", file=self._stream, flush=True)
            elif done in marks:
                print(line, file=self._stream, flush=True)
            return array
        return counted
