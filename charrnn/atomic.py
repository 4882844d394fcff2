"""Files written whole or not at all: a temporary file beside the target, flushed, then renamed.

On any failure (no space, no permission, a read-only filesystem, an interrupt) the target is left
as it was, the temporary file is removed, and an OSError names the target, not the temporary.
A file that replaces another keeps the other's mode; a new one gets the umask's usual mode.

Files that belong together (a model.npz and its meta.json) can be written with a journal: once
every temporary is on disk, a small JSON file naming them is written (atomically), and only then
are they renamed. A process killed between two renames leaves the journal, and
`finish_interrupted` (called before the files are next read or written) completes the renames:
the files are then all from the new save, never a mix of two.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where /proc says it (Linux 4.7+); elsewhere
    by setting and restoring it (a moment in which another thread's new file could get 022)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def new_file_mode() -> int:
    """The mode an ordinary new file gets under the current umask (mkstemp's is 0600)."""
    return 0o666 & ~current_umask()


def _mode_for(path: Path) -> int:
    """The replaced file's permission bits, or a new file's usual mode."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return new_file_mode()


def _name_the_target(error: OSError, path: Path, temporary: str | None) -> None:
    """Make the error speak of `path`: a failed write() carries no file name, and a failed
    mkstemp or rename carries the temporary's, which means nothing to a user."""
    if (
        error.filename is None
        or error.filename == temporary
        or (temporary is None and str(error.filename).startswith(str(path.parent)))
    ):
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
        with os.fdopen(fd, "wb") as f:  # owns fd from here: closed whatever happens below
            os.chmod(f.fileno(), _mode_for(path))
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


def atomic_write_all(
    files: list[tuple[str | Path, bytes]],
    journal: str | Path | None = None,
    *,
    ready: Sequence[tuple[str | Path, str | Path]] = (),
) -> None:
    """Write several files that belong together: every one to its temporary first, and only once
    all are on disk are they renamed into place, in order. A full disk or any other failure while
    writing leaves every target as it was (a rename itself needs no space). With `journal` (a
    path in the same directory, all files in one directory), a kill between two renames is
    completed by finish_interrupted(journal) (see the module's docstring). `ready`: (temporary,
    target) pairs already written (by temporary_beside), renamed first; removed on failure."""
    written: list[tuple[str, Path]] = [(str(tmp), Path(path)) for tmp, path in ready]
    try:
        for path, data in files:
            path = Path(path)
            written.append((_write_temporary(path, data), path))
        if journal is not None:
            finish_interrupted(journal)  # an older interrupted save first, never mixed in
            record = [[os.path.basename(tmp), path.name] for tmp, path in written]
            atomic_write(journal, json.dumps({"rename": record}).encode("utf-8"))
            written_now, written = written, []  # committed: from here the journal owns them
            _rename_all(written_now)
            os.unlink(journal)
            return
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


@contextlib.contextmanager
def temporary_beside(path: str | Path):
    """A new temporary file beside `path`, open for binary writing, for data too large to hold in
    memory: yields (file, temporary's path); flushed to disk when the block ends, removed if it
    raises. Rename it into place with atomic_write_all(..., ready=[(temporary, path)])."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        _name_the_target(error, path, None)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(f.fileno(), _mode_for(path))
            yield f, Path(tmp)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            _name_the_target(error, path, tmp)
        raise


def _rename_all(pairs: list[tuple[str, Path]]) -> None:
    for tmp, path in pairs:
        try:
            os.replace(tmp, path)
        except OSError as error:
            _name_the_target(error, path, tmp)
            raise


def finish_interrupted(journal: str | Path) -> bool:
    """Complete the renames of a save that was killed between them (see the module's docstring);
    whether there was one. The temporaries already renamed are gone; the rest are renamed now."""
    journal = Path(journal)
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))["rename"]
    except FileNotFoundError:
        return False
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        journal.unlink(missing_ok=True)  # cannot be: it is written atomically
        return False
    for tmp_name, target_name in record:
        tmp = journal.parent / os.path.basename(str(tmp_name))
        if tmp.exists():
            os.replace(tmp, journal.parent / os.path.basename(str(target_name)))
    journal.unlink(missing_ok=True)
    return True


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
