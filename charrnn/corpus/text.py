"""Reading a training text: checking it is text, decoding it and encoding it to ids, streaming.

A 100 MB corpus is never held whole, as bytes or as a str: the file is read and decoded a chunk at
a time, twice (once to find its characters, once to map them to ids), so memory is its ids plus a
chunk. Pure-ASCII chunks skip decoding: each byte is its own code point.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np
from numba import njit

from charrnn.corpus.encode import encode_code_chunks
from charrnn.errors import InputError
from charrnn.model.vocab import Vocab

_CHUNK_BYTES = 1 << 22
_WIDE = ("utf-16", "utf-32")
_UTF8_BOM = codecs.BOM_UTF8


def _codec(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}; try utf-8, latin-1 or cp1252") from None


def _open(path: Path):
    try:
        f = open(path, "rb")  # noqa: SIM115 - returned open: the caller closes it
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a text file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    return f


@njit(cache=True)
def _decode_utf8(data, out):
    """Code points of valid, complete UTF-8 (checked by Python first); returns how many."""
    n = 0
    i = 0
    while i < data.size:
        b = np.uint32(data[i])
        if b < 0x80:
            code, length = b, 1
        elif b < 0xE0:
            code, length = b & 0x1F, 2
        elif b < 0xF0:
            code, length = b & 0x0F, 3
        else:
            code, length = b & 0x07, 4
        for k in range(1, length):
            code = (code << 6) | (np.uint32(data[i + k]) & 0x3F)
        out[n] = code
        n += 1
        i += length
    return n


def _complete_prefix(chunk: bytes) -> int:
    """Length of the longest prefix of `chunk` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(chunk)) + 1):
        b = chunk[-back]
        if b & 0xC0 != 0x80:  # a lead byte (or ASCII)
            need = 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return len(chunk) - back if need > back else len(chunk)
    return len(chunk)


def _decode_error(path: Path, error: UnicodeDecodeError, offset: int) -> InputError:
    return InputError(
        f"{path}: byte 0x{error.object[error.start]:02x} at offset {offset} is not valid "
        f"{error.encoding}; pass --encoding (e.g. --encoding latin-1 or cp1252)"
    )


def _utf8_chunks(path: Path, chunk_bytes: int):
    """Code points of a UTF-8 file, chunk by chunk: Python's decoder checks each chunk, a compiled
    loop turns it into code points (much faster than building a str and re-encoding it)."""
    carry, offset = b"", 0
    with _open(path) as f:
        while True:
            fresh = f.read(chunk_bytes)
            final = len(fresh) < chunk_bytes
            chunk = carry + fresh
            if offset == 0 and chunk.startswith(_UTF8_BOM):
                chunk, offset = chunk[len(_UTF8_BOM) :], len(_UTF8_BOM)
            if b"\x00" in chunk:
                raise InputError(
                    f"{path}: looks like a binary file (it contains NUL bytes); "
                    "if it is UTF-16 text, pass --encoding utf-16"
                )
            cut = len(chunk) if final else _complete_prefix(chunk)
            body, carry = chunk[:cut], chunk[cut:]
            if body.isascii():
                yield np.frombuffer(body, dtype=np.uint8)  # ASCII: each byte is a code point
            else:
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise _decode_error(path, error, offset + error.start) from None
                codes = np.empty(len(body), dtype=np.uint32)
                yield codes[: _decode_utf8(np.frombuffer(body, dtype=np.uint8), codes)]
            offset += len(body)
            if final:
                return


def _code_chunks(path: Path, codec: str, chunk_bytes: int):
    """Code points of the decoded file, chunk by chunk (uint8 or uint32 arrays)."""
    if codec == "utf-8":
        yield from _utf8_chunks(path, chunk_bytes)
        return
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    wide = codec.startswith(_WIDE)
    offset = 0
    with _open(path) as f:
        while True:
            chunk = f.read(chunk_bytes)
            final = len(chunk) < chunk_bytes
            if b"\x00" in chunk and not wide:
                raise InputError(
                    f"{path}: looks like a binary file (it contains NUL bytes); "
                    "if it is UTF-16 text, pass --encoding utf-16"
                )
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as error:
                raise _decode_error(path, error, offset - pending + error.start) from None
            if wide and offset == 0 and text[:1] == "\ufeff":
                text = text[1:]
            codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            if codes.size and not codes.all():
                raise InputError(f"{path}: looks like a binary file (it contains NUL characters)")
            yield codes
            offset += len(chunk)
            if final:
                return


def load_corpus(path: str | Path, encoding: str = "utf-8", chunk_bytes: int = _CHUNK_BYTES) -> tuple[Vocab, np.ndarray]:
    """The vocabulary and ids of a text file; InputError (one line) for what cannot be a text."""
    path = Path(path)
    codec = _codec(encoding)
    length = sum(codes.size for codes in _code_chunks(path, codec, chunk_bytes))
    if length == 0:
        size = path.stat().st_size
        raise InputError(f"{path}: the file is empty" if size == 0 else f"{path}: the file holds no text")
    return encode_code_chunks(lambda: _code_chunks(path, codec, chunk_bytes), length)
