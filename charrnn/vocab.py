"""The character vocabulary: distinct characters in code-point order, and text <-> integer ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from numba import njit

from charrnn.errors import InputError

def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id."""
    for dtype in (np.uint8, np.uint16):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint32)


@dataclass(frozen=True)
class Vocab:
    chars: tuple[str, ...]
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("every vocabulary entry must be a single character")
        if list(self.chars) != sorted(set(self.chars)):
            raise ValueError("vocabulary must be distinct characters in code-point order")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.chars)})

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype:
        return id_dtype(len(self.chars))

    def index(self, char: str) -> int:
        return self._index[char]

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str) -> np.ndarray:
        """Ids of a short text such as a prompt (a corpus goes through `encode_code_chunks`)."""
        unknown = self.unknown(text)
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:10])
            raise InputError(f"characters not in the model's vocabulary: {shown}")
        return np.fromiter((self._index[c] for c in text), dtype=self.dtype, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def one_hot(ids: np.ndarray, vocab_size: int, dtype=np.float32) -> np.ndarray:
    """One-hot vectors for an array of ids: shape ids.shape + (vocab_size,).

    The kernels never build these: a row of U picked by index equals one_hot(ids) @ U.
    """
    out = np.zeros(ids.shape + (vocab_size,), dtype=dtype)     # (..., V)
    np.put_along_axis(out, ids[..., None].astype(np.intp), 1, axis=-1)
    return out


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
    vocab_codes = np.flatnonzero(present)                      # sorted code points
    vocab = Vocab(tuple(chr(c) for c in vocab_codes))
    lookup = np.zeros(_UNICODE, dtype=vocab.dtype)
    lookup[vocab_codes] = np.arange(vocab_codes.size, dtype=vocab.dtype)
    ids = np.empty(length, dtype=vocab.dtype)                  # (N,)
    position = 0
    for codes in chunks():
        if position + codes.size > length:
            raise ValueError(f"chunks hold more than the {length} characters announced")
        _map_codes(codes, lookup, ids[position:position + codes.size])
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
                yield np.frombuffer(text, dtype=np.uint8, count=min(_CHUNK, len(text) - start),
                                    offset=start).astype(np.uint32)
    else:
        def chunks():
            for start in range(0, len(text), _CHUNK):
                yield np.frombuffer(text[start:start + _CHUNK].encode("utf-32-le"), dtype=np.uint32)
    return encode_code_chunks(chunks, len(text))
