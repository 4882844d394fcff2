"""What a sample is asked for, with its defaults and its checks, once for the library, the CLI and
the server.

Each caller names the fields as its users write them (`top_k` in Python and JSON, `--top-k` on the
command line): `SampleOptions.check(spell)` raises InputError naming the field in that spelling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from charrnn.errors import InputError
from charrnn.model.vocab import Vocab

DEFAULT_LENGTH = 500
DEFAULT_TEMPERATURE = 0.8  # a little below 1: fewer misspellings, still varied
MAX_SEED = 2**64 - 1  # what numpy.random.default_rng takes as one whole number


def is_whole(value: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float | np.integer[Any] | np.floating[Any]]:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def python_name(field: str) -> str:
    return field


def option_name(field: str) -> str:
    """The command line's spelling of a field: top_k -> --top-k."""
    return "--" + field.replace("_", "-")


@dataclass(frozen=True)
class SampleOptions:
    """One request for text: `length` characters, drawn from softmax(logits / temperature) cut to
    the `top_k` most likely characters (0: off) and then to the smallest set holding `top_p` of
    the rest (1: off); `greedy` takes the most likely character instead. `seed` None: a fresh one."""

    length: int = DEFAULT_LENGTH
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    seed: int | None = None

    def check(self, spell: Callable[[str], str] = python_name) -> SampleOptions:
        """The options as plain Python numbers; InputError naming the first field that is wrong."""
        length, temperature, top_k, top_p = self.length, self.temperature, self.top_k, self.top_p
        if not is_whole(length) or length < 0:
            raise InputError(f"{spell('length')} must be a whole number, 0 or more, got {_shown(length)}")
        if is_number(temperature):
            try:
                temperature = float(temperature)  # a whole number past float's range: inf
            except OverflowError:
                temperature = math.inf
        if not is_number(temperature) or not (math.isfinite(temperature) and temperature > 0):
            raise InputError(
                f"{spell('temperature')} must be a number above 0, got {_shown(self.temperature)} "
                f"(for the most likely character every time, use {spell('greedy')})"
            )
        if not math.isfinite(1.0 / temperature):
            raise InputError(
                f"{spell('temperature')} {temperature} is too small to compute with; use {spell('greedy')}"
            )
        if not is_whole(top_k) or top_k < 0:
            raise InputError(f"{spell('top_k')} must be a whole number, 0 (off) or more, got {_shown(top_k)}")
        if not is_number(top_p) or not 0 < top_p <= 1:  # also refuses NaN
            raise InputError(f"{spell('top_p')} must be a number in (0, 1] (1 is off), got {_shown(top_p)}")
        if not isinstance(self.greedy, (bool, np.bool_)):
            raise InputError(f"{spell('greedy')} must be true or false, got {_shown(self.greedy)}")
        seed = self.seed
        if seed is not None and (not is_whole(seed) or not 0 <= seed <= MAX_SEED):
            raise InputError(
                f"{spell('seed')} must be a whole number from 0 to {MAX_SEED}, or none for "
                f"a fresh one, got {_shown(seed)}"
            )
        return SampleOptions(
            int(length),
            float(temperature),
            int(top_k),
            float(top_p),
            bool(self.greedy),
            None if seed is None else int(seed),
        )


def check_count(value: object, name: str, least: int = 1) -> int:
    """A whole number of `least` or more (samples, threads, chunk sizes); InputError otherwise."""
    if not is_whole(value) or value < least:
        raise InputError(f"{name} must be a whole number, {least} or more, got {_shown(value)}")
    return int(value)


def unknown_prime_message(vocab: Vocab, prime: str) -> str | None:
    """None if every character of `prime` is in the vocabulary, else a one-line description."""
    unknown = vocab.unknown(prime)
    if not unknown:
        return None
    shown = " ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
    return f"the prime has characters not in the model's vocabulary: {shown}"


def drop_unknown(vocab: Vocab, prime: str) -> tuple[str, list[str]]:
    """The prime without its out-of-vocabulary characters, and those characters (distinct, in
    order of appearance)."""
    unknown = vocab.unknown(prime)
    if not unknown:
        return prime, []
    dropped = set(unknown)
    return "".join(c for c in prime if c not in dropped), unknown
