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
import os

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
