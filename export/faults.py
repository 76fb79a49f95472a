"""Fault injection for the reliability tests: `BERT_EXPORT_FAULT=<point>` SIGKILLs the export at
that point, the way a CI job gets killed. Unset, every call is a no-op."""

from __future__ import annotations

import os
import signal

VARIABLE = "BERT_EXPORT_FAULT"
POINTS = ("validated", "weights_read", "traced", "temp_created", "saved", "verifier_started",
          "verified", "report_written", "published")


def fault_point(name: str) -> None:
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
