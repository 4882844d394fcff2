"""Files written whole or not at all: a temporary file beside the target, flushed, then renamed.

On any failure (no space, no permission, a read-only filesystem, an interrupt) the target is left
as it was, the temporary file is removed, and an OSError names the target, not the temporary.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


def new_file_mode() -> int:
    """The mode an ordinary new file gets under the current umask (mkstemp's is 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _name_the_target(error: OSError, path: Path, temporary: str | None) -> None:
    """Make the error speak of `path`: a failed write() carries no file name, and a failed
    mkstemp or rename carries the temporary's, which means nothing to a user."""
    if error.filename is None or error.filename == temporary or \
            (temporary is None and str(error.filename).startswith(str(path.parent))):
        error.filename = str(path)
        error.filename2 = None


def _write_temporary(path: Path, data: bytes) -> str:
    """A flushed temporary file beside `path` holding `data`; its name. Removed again on failure."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        _name_the_target(error, path, None)
        raise
    try:
        with os.fdopen(fd, "wb") as f:   # owns fd from here: closed whatever happens below
            os.chmod(f.fileno(), new_file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            _name_the_target(error, path, tmp)
        raise
    return tmp


def atomic_write_all(files: list[tuple[str | Path, bytes]]) -> None:
    """Write several files that belong together: every one to its temporary first, and only once
    all are on disk are they renamed into place, in order. A full disk or any other failure while
    writing leaves every target as it was (a rename itself needs no space)."""
    written: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            path = Path(path)
            written.append((_write_temporary(path, data), path))
        while written:
            tmp, path = written[0]
            try:
                os.replace(tmp, path)
            except OSError as error:
                _name_the_target(error, path, tmp)
                raise
            written.pop(0)
    finally:
        for tmp, _ in written:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    atomic_write_all([(path, data)])


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()
