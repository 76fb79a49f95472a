"""The versioned SavedModel directory, `<export_path>/<N>/`, made to appear atomically.

A version is written into a hidden, non-numeric temporary directory inside the base (TF Serving
only looks at numeric names), and renamed to its number only when complete and verified. The
rename never replaces an existing version: a collision with a concurrent exporter is detected and,
when the version was chosen automatically, the next free number is taken instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from typing import Callable

from export.errors import InputError

TEMP_PREFIX = ".bert-export-tmp-"
FAILED_PREFIX = "failed-"


def numeric_versions(base: str) -> list[int]:
    if not os.path.isdir(base):
        return []
    return sorted(int(name) for name in os.listdir(base) if name.isdigit() and int(name) > 0)


def check_export_path(base: str) -> None:
    """Fails early if `--export_path` cannot hold versions (creates nothing)."""
    if not base:
        raise InputError("--export_path is required")
    if os.path.exists(base) and not os.path.isdir(base):
        raise InputError(f"--export_path: {base} exists and is not a directory")
    existing = base
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--export_path: {existing} is not a writable directory")


def choose_version(base: str, requested: int | None, overwrite: bool) -> int:
    """The version to write: `requested`, or one more than the highest present."""
    if requested is None:
        versions = numeric_versions(base)
        return versions[-1] + 1 if versions else 1
    if requested <= 0:
        raise InputError(f"--version must be a positive integer, got {requested}")
    if os.path.exists(os.path.join(base, str(requested))) and not overwrite:
        raise InputError(f"--version: {os.path.join(base, str(requested))} already exists "
                         "(pass --overwrite to replace it, or omit --version for the next free one)")
    return requested


def make_temp_dir(base: str) -> str:
    """A fresh temporary directory in `base`, named after this process (see remove_stale_temp_dirs)."""
    os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=base)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)  # mkdtemp's 0700 would hide the version from a serving user
    return path


_AT_FDCWD, _RENAME_NOREPLACE, _RENAME_EXCHANGE = -100, 1, 2


def _renameat2(src: str, dst: str, flags: int) -> bool:
    """renameat2(2) with `flags`; False where the kernel, filesystem or libc lacks it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), dst)


def _rename_no_replace(src: str, dst: str) -> None:
    """Renames `src` to `dst`, raising FileExistsError if `dst` exists (atomically where possible)."""
    try:
        if _renameat2(src, dst, _RENAME_NOREPLACE):
            return
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "exists", dst) from None
        raise
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", dst)
    os.rename(src, dst)  # fails on a non-empty directory that appeared meanwhile


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp_dir: str, base: str, version: int, version_was_requested: bool, overwrite: bool,
            before_rename: Callable[[int], None] = lambda version: None) -> str:
    """Renames the finished `temp_dir` to `<base>/<version>`; returns the final path.

    Never replaces an existing version unless `overwrite`, in which case the swap is atomic
    (readers see the old or the new version, never none).
    """
    while True:
        target = os.path.join(base, str(version))
        before_rename(version)
        if overwrite and os.path.exists(target):
            if not _renameat2(temp_dir, target, _RENAME_EXCHANGE):
                aside = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-old-", dir=base)
                os.rename(target, os.path.join(aside, "old"))
                os.rename(temp_dir, target)
                temp_dir = aside
            shutil.rmtree(temp_dir, ignore_errors=True)  # now holds the replaced version
            break
        try:
            _rename_no_replace(temp_dir, target)
            break
        except (FileExistsError, OSError) as e:
            if not isinstance(e, FileExistsError) and e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if version_was_requested:
                raise InputError(f"--version: {target} was created by another export meanwhile") from None
            version += 1  # a concurrent export took this number: take the next
    _fsync_dir(base)
    return target


def keep_aside(temp_dir: str, base: str, version: int) -> str:
    """Moves a failed export to a clearly non-numeric name, for inspection."""
    target = tempfile.mkdtemp(prefix=f"{FAILED_PREFIX}{version}-", dir=base)
    os.rmdir(target)
    os.rename(temp_dir, target)
    return target


def remove_stale_temp_dirs(base: str) -> list[str]:
    """Removes temporary directories left by exports that were killed (their process is gone)."""
    removed = []
    if not os.path.isdir(base):
        return removed
    for name in os.listdir(base):
        path = os.path.join(base, name)
        pid_text = name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not name.startswith(TEMP_PREFIX) or not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
