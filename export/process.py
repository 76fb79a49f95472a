"""The exporter's process settings, and the verifier processes it starts.

Settings that let the exporter give memory back once the weights are saved:

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
import tempfile
import time
from typing import Callable

from export.errors import InputError, VerificationError

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1 << 20
_we_disabled_onednn = False
PHASES_KEY = "phase_seconds"  # the verifier's timings, beside its report


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
    proc = subprocess.run([sys.executable, "-m", module, *args], input=stdin, capture_output=True, text=True,
                          encoding="utf-8", env=_verifier_environment())
    return _report_of(module, proc.returncode, proc.stdout, proc.stderr)


def _verifier_environment(**extra: str) -> dict[str, str]:
    env = environment_for_consumers()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name, value in extra.items():
        env.setdefault(name, value)
    return env


def _report_of(module: str, returncode: int, stdout: str, stderr: str) -> dict:
    """The JSON report on a verifier's last stdout line; a failed process is a VerificationError
    naming its last stderr line."""
    if returncode != 0:
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        raise VerificationError(f"{module} process failed (exit {returncode}): {tail}")
    return json.loads(stdout.strip().splitlines()[-1])


class VerifierProcess:
    """A verifier started ahead of the SavedModel it checks (`python -m <module>`, the consumer's
    environment): it imports TensorFlow and computes its reference from `request` while the
    exporter builds and saves, then waits for the directory (`finish_json`); `alongside_export` False
    when nothing else runs meanwhile. Its stderr goes to a file, so that a chatty import cannot
    fill a pipe and stall it."""

    def __init__(self, module: str, request: dict, alongside_export: bool = True):
        self._module = module
        self.phase_seconds: dict[str, float] = {}  # the process's own timings, once finished
        # Alongside the export: numpy's reference on one core, the exporter on the other (TF ignores it).
        env = _verifier_environment(**({"OPENBLAS_NUM_THREADS": "1"} if alongside_export else {}))
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self._proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, text=True, encoding="utf-8", env=env)
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # it failed already: finish() reports why

    def finish_json(self, saved_model_dir: str) -> dict:
        """Hands over the saved directory and waits; returns the JSON report the process prints
        last (subclasses' `finish` turns it into their report). A process that fails is a
        VerificationError naming its last stderr line."""
        out, _ = self._proc.communicate(json.dumps({"saved_model_dir": saved_model_dir}) + "\n")
        self._stderr.seek(0)
        err = self._stderr.read()
        self._stderr.close()
        data = _report_of(self._module, self._proc.returncode, out, err)
        self.phase_seconds = data.pop(PHASES_KEY, {})
        return data

    def cancel(self) -> None:
        """Stops the process if it still runs (the export ended before it was needed)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
            if stream and not stream.closed:
                stream.close()


def two_phase_verifier_main(prepare: Callable[[dict], object], check: Callable[[object, str], object]) -> int:
    """The child's side of VerifierProcess: `prepare(request)` on the first stdin line, then, once the
    second line names the saved directory, prints `check(prepared, directory)`'s report as JSON on
    the last line. End of input instead of the directory (the export stopped) exits 0 quietly."""
    try:
        started = time.monotonic()
        prepared = prepare(json.loads(sys.stdin.readline()))
        prepared_at = time.monotonic()
        line = sys.stdin.readline()
        if not line:
            return 0
        handed_over = time.monotonic()
        report = check(prepared, json.loads(line)["saved_model_dir"])
    except (InputError, VerificationError) as e:
        print(str(e), file=sys.stderr)
        return 1
    phases = {"reference": prepared_at - started, "waiting_for_save": handed_over - prepared_at,
              "check": time.monotonic() - handed_over}
    print(json.dumps(report.to_json_dict() | {PHASES_KEY: {k: round(x, 3) for k, x in phases.items()}}), flush=True)
    os._exit(0)  # nothing is left to write: skip tearing TensorFlow and the model down (~1 s on BERT-large)


def verifier_process_main(verify: Callable[[], object]) -> int:
    """The child's side: prints `verify()`'s report as JSON on the last line; exit 1 on bad input."""
    try:
        report = verify()
    except (InputError, VerificationError) as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps(report.to_json_dict()))
    return 0
