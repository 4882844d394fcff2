"""Generating text from a trained model: the one-stream and several-stream calls over the batched
sampler (charrnn.sampling.batch), and `sample` / `stream` over a model directory or bundled name.

Every random number is drawn here, in Python, from the caller's seeded `np.random.Generator` and
handed to the kernel as an array: the same seed gives the same text whether the JIT is on or off
(NUMBA_DISABLE_JIT=1), and however the characters are split into chunks (a Generator's `random(a)`
then `random(b)` gives the same numbers as `random(a + b)`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from charrnn.errors import InputError
from charrnn.model.checkpoint import Model, load
from charrnn.model.params import Params
from charrnn.model.vocab import Vocab
from charrnn.sampling.batch import FIRST_CHUNK, MAX_CHUNK, BatchSampler
from charrnn.sampling.options import (
    DEFAULT_LENGTH,
    DEFAULT_TEMPERATURE,
    SampleOptions,
    check_count,
    unknown_prime_message,
)


def _check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise InputError("rng must be a numpy.random.Generator, e.g. numpy.random.default_rng(seed)")


def _uniforms(rng: np.random.Generator, greedy: bool, shape: tuple[int, int]) -> np.ndarray:
    """The draws' random numbers; nothing is drawn when greedy (the generator does not move)."""
    if greedy:
        return np.zeros(shape, dtype=np.float64)
    return rng.random(shape)


# (inv_temperature, top_k, top_p, greedy), each of shape (n,): the sampler's per-stream options.
OptionArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _batch_options(n: int, options: SampleOptions) -> OptionArrays:
    """(inv_temperature, top_k, top_p, greedy) as the sampler's (n,) arrays."""
    return (
        np.full(n, 1.0 / options.temperature),
        np.full(n, options.top_k, dtype=np.int64),
        np.full(n, options.top_p),
        np.full(n, options.greedy),
    )


def iter_samples(
    params: Params,
    vocab: Vocab,
    length: int,
    *,
    num: int = 1,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    rng: np.random.Generator,
    chunk_size: int = MAX_CHUNK,
) -> Iterator[list[str]]:
    """Generate `num` samples of `length` characters after `prime`, stepped together as one
    batch, yielding a list of `num` new pieces at a time.

    Sample i uses row i of `rng.random((num, length))` (nothing is drawn when greedy), so the
    samples are exactly those `num` calls of `sample_text` in a row would give. Arguments are
    checked here, before the first piece is asked for (InputError, one line). `top_k` 0 and
    `top_p` 1 switch those cuts off; `greedy` takes the most likely character every time.
    """
    options = SampleOptions(length, temperature, top_k, top_p, greedy).check()
    _check_rng(rng)
    num = check_count(num, "num")
    chunk_size = check_count(chunk_size, "chunk size")
    if not isinstance(prime, str):
        raise InputError(f"prime must be a string, got {type(prime).__name__}")
    sampler = BatchSampler(params, vocab)
    problem = unknown_prime_message(vocab, prime)
    if problem:
        raise InputError(problem)
    prime_ids = vocab.encode(prime).astype(np.int64)  # (len(prime),)
    return _generate(
        sampler, options.length, num, prime_ids, options.greedy, rng, _batch_options(num, options), chunk_size
    )


def _generate(
    sampler: BatchSampler,
    length: int,
    num: int,
    prime_ids: np.ndarray,
    greedy: bool,
    rng: np.random.Generator,
    options: OptionArrays,
    chunk_size: int,
) -> Iterator[list[str]]:
    """The generator behind iter_samples, over checked arguments."""
    states = sampler.new_states(1)
    sampler.read(states, 0, prime_ids)
    states = np.ascontiguousarray(np.repeat(states, num, axis=0))  # (num, L, K, H)
    # One sample draws its uniforms chunk by chunk (a Generator's random(a) then random(b) gives
    # the numbers random(a + b) gives), so a long stream never holds them all; several need
    # their rows of random((num, length)) from the start.
    uniforms = None if num == 1 else _uniforms(rng, greedy, (num, length))  # (num, length)
    done = 0
    size = min(FIRST_CHUNK, chunk_size)
    while done < length:
        n = min(size, length - done)
        if uniforms is None:
            chunk_uniforms = _uniforms(rng, greedy, (1, n))  # (1, n)
        else:
            chunk_uniforms = np.ascontiguousarray(uniforms[:, done : done + n])
        ids = np.empty((num, n), dtype=np.int64)  # (num, n)
        sampler.draw(states, chunk_uniforms, *options, ids)
        yield [sampler.decode(ids[i]) for i in range(num)]
        done += n
        size = min(size * 2, chunk_size)


def iter_sample(
    params: Params,
    vocab: Vocab,
    length: int,
    *,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    rng: np.random.Generator,
    chunk_size: int = MAX_CHUNK,
) -> Iterator[str]:
    """Generate `length` characters after `prime`, yielding pieces of text as they are made.

    The pieces joined are exactly `sample_text(...)` with the same arguments and generator state;
    `for ch in itertools.chain.from_iterable(iter_sample(...))` gives one character at a time.
    Arguments are checked here, before the first piece is asked for (InputError, one line).
    """
    pieces = iter_samples(
        params,
        vocab,
        length,
        prime=prime,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        rng=rng,
        chunk_size=chunk_size,
    )
    return (batch[0] for batch in pieces)


def sample_text(
    params: Params,
    vocab: Vocab,
    length: int,
    *,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    rng: np.random.Generator,
) -> str:
    """`length` characters generated after `prime` (the prime itself is not included).

    The state starts at zero and reads the prime first; with an empty prime the first character
    is drawn from softmax(b_y). Same generator state, same text.
    """
    return "".join(
        iter_sample(
            params,
            vocab,
            length,
            prime=prime,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            greedy=greedy,
            rng=rng,
        )
    )


def _rng(seed: int | None, rng: np.random.Generator | None) -> np.random.Generator:
    if rng is not None and seed is not None:
        raise InputError("give a seed or a generator, not both")
    if rng is not None:
        return rng
    return np.random.default_rng(SampleOptions(seed=seed).check().seed)


def stream(
    model: Model | str | os.PathLike[str] | None = None,
    length: int = DEFAULT_LENGTH,
    *,
    prime: str = "",
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
) -> Iterator[str]:
    """Pieces of generated text from a model (a Model, a directory, a bundled model's name, or
    None for the default bundled one)."""
    model = load(model)
    return iter_sample(
        model.params,
        model.vocab,
        length,
        prime=prime,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        rng=_rng(seed, rng),
    )


def sample(
    model: Model | str | os.PathLike[str] | None = None,
    length: int = DEFAULT_LENGTH,
    *,
    prime: str = "",
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
) -> str:
    """`length` characters from a model after `prime` (not included), e.g.
    `sample("runs/shakespeare", 200, prime="ROMEO:", seed=1)`."""
    return "".join(
        stream(
            model,
            length,
            prime=prime,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            greedy=greedy,
            seed=seed,
            rng=rng,
        )
    )
