"""The character vocabulary: distinct characters in code-point order, and text <-> integer ids."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
        if any(not isinstance(c, str) or len(c) != 1 for c in self.chars):
            raise ValueError("every vocabulary entry must be a single character")
        if any("\ud800" <= c <= "\udfff" for c in self.chars):
            raise ValueError("the vocabulary holds a lone surrogate, which is not text")
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
    out = np.zeros(ids.shape + (vocab_size,), dtype=dtype)  # (..., V)
    np.put_along_axis(out, ids[..., None].astype(np.intp), 1, axis=-1)
    return out
