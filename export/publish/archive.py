"""Safe extraction of a downloaded artifact (`.tar.gz`) into a private temporary directory.

Every member is checked before anything is written: regular files and directories only (no
symlinks, hard links, devices or FIFOs), relative paths that stay inside the archive (no absolute
paths, no `..`), and a total declared size under a cap, so that a gzip bomb is refused before
it is expanded. Bytes actually written are counted against the same cap.
"""

from __future__ import annotations

import os
import posixpath
import tarfile

from export.errors import InputError

DEFAULT_MAX_BYTES = 8 << 30  # BERT-large is 1.3 GB; the largest published BERTs stay well under


def _check_member(archive: str, member: tarfile.TarInfo) -> str:
    name = member.name
    reason = None
    if member.issym() or member.islnk():
        reason = f"is a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        reason = "is not a regular file or directory (device, FIFO or other special file)"
    elif name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\\" in name:
        reason = "has an absolute path"
    else:
        normalized = posixpath.normpath(name)
        if normalized == ".." or normalized.startswith("../") or ".." in name.split("/"):
            reason = "escapes the archive (..)"
        else:
            return normalized
    raise InputError(f"{os.path.basename(archive)}: refused: member {name!r} {reason}")


def extract_safely(archive: str, destination: str, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Extracts `archive` into the existing empty directory `destination`; returns member names."""
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (OSError, tarfile.TarError) as e:
        raise InputError(f"--artifact: {archive} is not a readable tar archive ({e})") from e
    with tar:
        try:
            members = tar.getmembers()
        except (OSError, tarfile.TarError, EOFError) as e:
            raise InputError(f"{os.path.basename(archive)}: corrupt archive ({e})") from e
        names = [_check_member(archive, m) for m in members]
        declared = sum(m.size for m in members if m.isfile())
        if declared > max_bytes:
            raise InputError(f"{os.path.basename(archive)}: refused: it declares {declared:,} bytes, more than the "
                             f"cap of {max_bytes:,} (--max_extracted_bytes)")
        written = 0
        for member, name in zip(members, names):
            target = os.path.join(destination, name)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            source = tar.extractfile(member)
            with open(target, "xb") as out:  # "x": never through anything already there
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise InputError(f"{os.path.basename(archive)}: refused: expands past {max_bytes:,} bytes")
                    out.write(chunk)
    return names
