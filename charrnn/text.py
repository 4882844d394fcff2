"""Reading a training text: decoding, and refusing what cannot be a text."""

from __future__ import annotations

import codecs
from pathlib import Path

from charrnn.errors import InputError


def read_text(path: str | Path, encoding: str = "utf-8") -> str | bytes:
    """The decoded text of a file, or its bytes when it is pure ASCII (they need no decoding).

    UTF-8 drops a leading byte-order mark. Errors are InputError with a one-line message.
    """
    path = Path(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}; try utf-8, latin-1 or cp1252") from None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a text file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    if not raw:
        raise InputError(f"{path}: the file is empty")
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        if raw.isascii():
            if b"\x00" in raw:
                raise InputError(f"{path}: looks like a binary file (it contains NUL bytes)")
            return raw
        encoding = "utf-8-sig"
    if b"\x00" in raw and not encoding.lower().startswith(("utf-16", "utf-32", "utf16", "utf32")):
        raise InputError(f"{path}: looks like a binary file (it contains NUL bytes); "
                         "if it is UTF-16 text, pass --encoding utf-16")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        byte = raw[error.start]
        raise InputError(f"{path}: byte 0x{byte:02x} at offset {error.start} is not valid "
                         f"{error.encoding}; pass --encoding (e.g. --encoding latin-1 or cp1252)") from None
    del raw
    if encoding.lower().startswith(("utf-16", "utf-32", "utf16", "utf32")) and text[:1] == "\ufeff":
        text = text[1:]
    if not text:
        raise InputError(f"{path}: the file holds no text")
    if "\x00" in text:
        raise InputError(f"{path}: looks like a binary file (it contains NUL characters)")
    return text
