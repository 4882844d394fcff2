"""From text to ids: a text's vocabulary and its characters as ids, in two passes over chunks of
code points, so that a large text never exists as one str (compiled: this is the corpus's hot loop)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from numba import njit

from charrnn.model.vocab import Vocab

_UNICODE = 0x110000  # one slot per possible code point in the count and lookup tables


@njit(cache=True)
def _mark_present(codes, present):
    for i in range(codes.size):
        present[codes[i]] = True


@njit(cache=True)
def _map_codes(codes, lookup, out):
    for i in range(codes.size):
        out[i] = lookup[codes[i]]


def encode_code_chunks(chunks: Callable[[], Iterable[np.ndarray]], length: int) -> tuple[Vocab, np.ndarray]:
    """Vocabulary and ids of a text given as chunks of code points (uint8 or uint32 arrays).

    `chunks()` is called twice (one pass finds the characters, one maps them), so the whole text
    never has to exist as one str or one code-point array: memory stays the ids plus a chunk.
    """
    present = np.zeros(_UNICODE, dtype=np.bool_)
    for codes in chunks():
        _mark_present(codes, present)
    vocab_codes = np.flatnonzero(present)  # sorted code points
    vocab = Vocab(tuple(chr(c) for c in vocab_codes))
    lookup = np.zeros(_UNICODE, dtype=vocab.dtype)
    lookup[vocab_codes] = np.arange(vocab_codes.size, dtype=vocab.dtype)
    ids = np.empty(length, dtype=vocab.dtype)  # (N,)
    position = 0
    for codes in chunks():
        if position + codes.size > length:
            raise ValueError(f"chunks hold more than the {length} characters announced")
        _map_codes(codes, lookup, ids[position : position + codes.size])
        position += codes.size
    if position != length:
        raise ValueError(f"chunks held {position} characters, expected {length}")
    return vocab, ids


_CHUNK = 1 << 22  # characters per chunk


def encode_text(text: str | bytes) -> tuple[Vocab, np.ndarray]:
    """Vocabulary and ids of a text: a str, or pure-ASCII bytes (each byte its own code point)."""
    if isinstance(text, bytes):
        if not text.isascii():
            raise ValueError("bytes given to encode_text must be ASCII")

        def chunks():
            for start in range(0, len(text), _CHUNK):
                yield np.frombuffer(text, dtype=np.uint8, count=min(_CHUNK, len(text) - start), offset=start).astype(
                    np.uint32
                )
    else:

        def chunks():
            for start in range(0, len(text), _CHUNK):
                yield np.frombuffer(text[start : start + _CHUNK].encode("utf-32-le"), dtype=np.uint32)

    return encode_code_chunks(chunks, len(text))
