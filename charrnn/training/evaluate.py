"""Bits per character of a model on a text.

The exact number (`exact_bpc`, what `charrnn eval` prints and what a run's meta.json records) carries
one state from the first character to the last, without dropout: a batch of one, run by the
sampler's two-thread forward (charrnn.sampling.batch). During training, validation uses an estimate
(`estimate_bpc`): the text cut into pieces scored side by side as one batch, each piece's state warmed
up on the characters before it; it lands within a few thousandths of a bit of the exact number
(BENCHMARKS.md) at a fraction of the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from charrnn.corpus.text import load_corpus
from charrnn.errors import InputError
from charrnn.model.params import Params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab

if TYPE_CHECKING:
    from charrnn.kernels.window import Kernels

LN2 = math.log(2.0)
EXACT_CHUNK = 4096  # characters per call of the exact pass (the state carried from call to call)
ESTIMATE_STREAMS = 32  # pieces the estimate scores side by side
ESTIMATE_WINDOW = 128  # characters per forward call of the estimate
ESTIMATE_WARMUP = 256  # characters each piece's state reads before its first scored character


def exact_bpc(params: Params, vocab: Vocab | None, ids: np.ndarray, threads: int | None = None) -> float:
    """Bits per character over a whole text (ids, at least 2), the state carried from start to end
    (no dropout): every character after the first is scored."""
    from charrnn.sampling.batch import BatchSampler  # late: it loads the compiled sampler

    sampler = BatchSampler(params.astype(np.float32) if params.dtype != np.float32 else params, vocab, threads=threads)
    states = sampler.new_states(1)  # (1, L, K, H)
    total = 0.0
    for start in range(0, len(ids) - 1, EXACT_CHUNK):
        segment = np.asarray(ids[start : start + EXACT_CHUNK + 1], dtype=np.int64)
        inputs = np.ascontiguousarray(segment[None, :-1])  # (1, T')
        targets = np.ascontiguousarray(segment[None, 1:])
        log_probs = np.empty(inputs.shape)  # (1, T') float64
        sampler.score(states, inputs, targets, log_probs)
        total -= float(log_probs.sum())
    return total / (len(ids) - 1) / LN2


def estimate_kernels(spec: ModelSpec, threads: int) -> Kernels:
    """Kernels for estimate_bpc: ESTIMATE_STREAMS x ESTIMATE_WINDOW, no dropout."""
    from charrnn.kernels.window import Kernels  # imported late: it compiles or loads the kernels

    return Kernels(spec, ESTIMATE_STREAMS, ESTIMATE_WINDOW, np.float32, threads=threads)


def estimate_bpc(kernels: Kernels, params: Params, ids: np.ndarray, warmup: int = ESTIMATE_WARMUP) -> float:
    """An estimate of exact_bpc: the scored characters cut into as many contiguous pieces as the
    kernels have streams, scored side by side. The first piece starts at the text's start from the
    zero state, as the exact pass does; every other piece's state starts at zero `warmup`
    characters before it. A text too short to cut gets the exact number."""
    streams, window = kernels.batch_size, kernels.seq_length
    scored = len(ids) - 1
    piece = scored // streams
    if piece < 2 * warmup:
        return exact_bpc(params, None, ids)
    ids = np.asarray(ids, dtype=np.int32)
    starts = np.arange(streams) * piece  # (B,) first input
    state = np.zeros(params.spec.state_shape(streams), dtype=params.dtype)  # (B, L, K, H)
    offsets = np.arange(warmup, dtype=np.int64)
    warm = ids[np.maximum(starts[:, None] - warmup + offsets[None, :], 0)]  # (B, warmup)
    for a in range(0, warmup, window):
        inputs = np.ascontiguousarray(warm[:, a : a + window])
        kernels.loss(params, inputs, inputs, state)  # the loss is not used
        state[...] = kernels.state_last
    state[0] = 0.0  # piece 0: the exact start
    total = 0.0
    for a in range(0, piece, window):
        width = min(window, piece - a)
        columns = starts[:, None] + a + np.arange(width)[None, :]  # (B, width)
        total += kernels.loss(params, ids[columns], ids[columns + 1], state) * streams * width
        state[...] = kernels.state_last
    return total / (streams * piece) / LN2


@dataclass(frozen=True)
class Evaluation:
    bpc: float
    chars: int  # characters scored (the first is only read)
    skipped: dict[str, int]  # characters outside the vocabulary left out, and how often


def encode_for_model(
    path: str | Path, vocab: Vocab, encoding: str = "utf-8", unknown: str = "error"
) -> tuple[np.ndarray, dict[str, int]]:
    """The ids of a text file in the model's vocabulary, and the unknown characters skipped.
    unknown="error": InputError (one line) naming characters outside the vocabulary."""
    if unknown not in ("error", "skip"):
        raise InputError(f"unknown must be error or skip, got {unknown!r}")
    text_vocab, ids = load_corpus(path, encoding)  # ids in text_vocab
    lookup = np.array(
        [vocab.chars.index(c) if c in vocab.chars else -1 for c in text_vocab.chars], dtype=np.int64
    )  # text id -> model id
    mapped = lookup[ids]
    outside = mapped < 0
    skipped: dict[str, int] = {}
    if outside.any():
        counts = np.bincount(ids[outside], minlength=len(text_vocab))
        skipped = {text_vocab.chars[i]: int(n) for i, n in enumerate(counts) if n}
        if unknown == "error":
            shown = " ".join(repr(c) for c in list(skipped)[:10]) + (" ..." if len(skipped) > 10 else "")
            raise InputError(
                f"{path}: {sum(skipped.values()):,} characters are not in the model's "
                f"vocabulary: {shown}; pass --unknown skip to leave them out"
            )
        mapped = mapped[~outside]
    if mapped.size < 2:
        raise InputError(f"{path}: fewer than 2 characters the model knows; nothing to score")
    return mapped.astype(np.int32), skipped


def evaluate_file(model, path: str | Path, encoding: str = "utf-8", unknown: str = "error") -> Evaluation:
    """A Model's bits per character on a text file."""
    ids, skipped = encode_for_model(path, model.vocab, encoding, unknown)
    return Evaluation(exact_bpc(model.params, model.vocab, ids), int(ids.size - 1), skipped)
