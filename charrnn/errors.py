"""The one family of errors the library raises; the CLI turns each into a one-line message.

`describe_os_error` words an OSError the same way wherever it is caught: the path, the reason, and
what to do about it.
"""

from __future__ import annotations

import errno
import os


class CharRNNError(Exception):
    """Base of every error charrnn reports to a user."""


class InputError(CharRNNError):
    """A text file or option that charrnn cannot use."""


class ModelFormatError(CharRNNError):
    """A model directory that is missing, corrupt or of an unknown format."""


class TrainingDiverged(CharRNNError):
    """The loss became NaN or infinite."""


class DownloadError(CharRNNError):
    """A corpus could not be fetched or verified."""


class StorageError(CharRNNError):
    """A file or folder could not be read or written (full disk, permissions, read-only ...)."""


# What a user can do about each kind of failure. Those in _TRANSIENT go away once it is done, so
# the message goes on to say how to carry on ("then ...").
_ADVICE = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (the disk quota is used up)",
    errno.EFBIG: "the file is too large for this filesystem; choose another place",
    errno.EACCES: "check its permissions, or choose another place",
    errno.EPERM: "check its permissions, or choose another place",
    errno.EROFS: "choose a place on a writable filesystem",
    errno.ENOTDIR: "part of that path is a file, not a folder; choose another path",
    errno.EISDIR: "that is a folder; give a file",
    errno.ENOENT: "check the path",
    errno.EEXIST: "something is already there; choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EIO: "the device reported an input/output error; check the disk",
    errno.EMFILE: "too many files are open; close some programs",
    errno.ENFILE: "too many files are open; close some programs",
}
_TRANSIENT = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EMFILE, errno.ENFILE}


def describe_os_error(error: OSError, path: str | os.PathLike | None = None, then: str | None = None) -> str:
    """One line for a user: "PATH: REASON; ADVICE, then THEN".

    `path` stands in for the error's own file name (or names the file when the error has none,
    as a failed write() has not); `then` says how to carry on once the cause is fixed, and is used
    only for causes that can be fixed where they are (a full disk, permissions), not for a path
    that can never work.
    """
    where = path if path is not None else error.filename
    reason = error.strerror or str(error) or type(error).__name__
    if error.filename2 is not None and path is None:
        where = f"{error.filename} -> {error.filename2}"
    text = f"{os.fspath(where)}: {reason}" if where is not None else reason
    advice = _ADVICE.get(error.errno) if error.errno is not None else None
    carry_on = then if then and (error.errno in _TRANSIENT or error.errno is None) else None
    if advice and carry_on:
        text += f"; {advice}, then {carry_on}"
    elif advice:
        text += f"; {advice}"
    elif carry_on:
        text += f"; {carry_on}"
    return " ".join(text.split())  # one line, whatever the reason held
