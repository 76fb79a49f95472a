"""Process settings that let the exporter give memory back once the weights are saved.

The export process holds one copy of the weights while it builds and saves, then waits for the
verifier process, which loads its own copy. For the peak of the two together to stay near one
copy, the exporter's copy must really be returned to the OS when it is freed. Two things prevent
that by default: oneDNN's CPU allocator pools large buffers for reuse, and glibc's dynamic mmap
threshold puts buffers freed once (e.g. numpy temporaries) back on the heap, where they stick.
The exporter executes no math of its own (tracing and saving only), so disabling oneDNN here
changes nothing in the SavedModel; the verifier runs with the consumer's defaults.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from typing import Callable

from export.errors import InputError, VerificationError

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1 << 20
_we_disabled_onednn = False


def prepare_export_process() -> None:
    """Call before TensorFlow is imported."""
    global _we_disabled_onednn
    if ONEDNN_VARIABLE not in os.environ:
        os.environ[ONEDNN_VARIABLE] = "0"
        _we_disabled_onednn = True
    try:  # a fixed threshold: buffers of 1 MiB and more are mmap'd, and unmapped when freed
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def environment_for_consumers() -> dict[str, str]:
    """os.environ as a consumer of the SavedModel would have it (our oneDNN override removed)."""
    env = dict(os.environ)
    if _we_disabled_onednn:
        env.pop(ONEDNN_VARIABLE, None)
    return env


def run_verifier_process(module: str, args: list[str], stdin: str | None = None) -> dict:
    """Runs `python -m <module> <args>` with the consumer's environment (a fresh process loads the
    SavedModel as a consumer would); returns the JSON report its last stdout line holds. A process
    that fails to run is a VerificationError naming its last stderr line."""
    env = environment_for_consumers()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([sys.executable, "-m", module, *args], input=stdin, capture_output=True, text=True,
                          encoding="utf-8", env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise VerificationError(f"{module} process failed (exit {proc.returncode}): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def verifier_process_main(verify: Callable[[], object]) -> int:
    """The child's side: prints `verify()`'s report as JSON on the last line; exit 1 on bad input."""
    try:
        report = verify()
    except (InputError, VerificationError) as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps(report.to_json_dict()))
    return 0
