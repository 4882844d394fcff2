"""Bits per character of a model on a text: the number training reports for its validation text,
computed the same way (the state carried from the first character to the last, no dropout)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import InputError
from charrnn.params import Params
from charrnn.spec import ModelSpec
from charrnn.text import load_corpus
from charrnn.vocab import Vocab

LN2 = math.log(2.0)
EVAL_CHUNK = 256          # characters per forward call (the state carried from call to call)


def evaluate_bpc(kernels, params: Params, ids: np.ndarray) -> float:
    """Bits per character over a whole text, the state carried from start to end (no dropout).
    `kernels` are for batch 1 and windows of EVAL_CHUNK characters (see eval_kernels)."""
    state = np.zeros(params.spec.state_shape(1), dtype=params.dtype)       # (1, L, K, H)
    total_nats = 0.0
    for start in range(0, len(ids) - 1, EVAL_CHUNK):
        segment = ids[start:start + EVAL_CHUNK + 1].astype(np.int32)
        inputs, targets = segment[None, :-1], segment[None, 1:]              # (1, T')
        total_nats += kernels.loss(params, inputs, targets, state) * inputs.shape[1]
        state[...] = kernels.state_last
    return total_nats / (len(ids) - 1) / LN2


def eval_kernels(spec: ModelSpec):
    """Kernels for evaluate_bpc: batch 1, one thread, no dropout."""
    from charrnn.kernels.window import Kernels  # imported late: it compiles or loads the kernels
    return Kernels(spec, 1, EVAL_CHUNK, np.float32, threads=1)


@dataclass(frozen=True)
class Evaluation:
    bpc: float
    chars: int                     # characters scored (the first is only read)
    skipped: dict[str, int]        # characters outside the vocabulary left out, and how often


def encode_for_model(path: str | Path, vocab: Vocab, encoding: str = "utf-8",
                     unknown: str = "error") -> tuple[np.ndarray, dict[str, int]]:
    """The ids of a text file in the model's vocabulary, and the unknown characters skipped.
    unknown="error": InputError (one line) naming characters outside the vocabulary."""
    if unknown not in ("error", "skip"):
        raise InputError(f"unknown must be error or skip, got {unknown!r}")
    text_vocab, ids = load_corpus(path, encoding)                            # ids in text_vocab
    lookup = np.array([vocab.chars.index(c) if c in vocab.chars else -1
                       for c in text_vocab.chars], dtype=np.int64)           # text id -> model id
    mapped = lookup[ids]
    outside = mapped < 0
    skipped: dict[str, int] = {}
    if outside.any():
        counts = np.bincount(ids[outside], minlength=len(text_vocab))
        skipped = {text_vocab.chars[i]: int(n) for i, n in enumerate(counts) if n}
        if unknown == "error":
            shown = " ".join(repr(c) for c in list(skipped)[:10]) + (" ..." if len(skipped) > 10 else "")
            raise InputError(f"{path}: {sum(skipped.values()):,} characters are not in the model's "
                             f"vocabulary: {shown}; pass --unknown skip to leave them out")
        mapped = mapped[~outside]
    if mapped.size < 2:
        raise InputError(f"{path}: fewer than 2 characters the model knows; nothing to score")
    return mapped.astype(np.int32), skipped


def evaluate_file(model, path: str | Path, encoding: str = "utf-8",
                  unknown: str = "error") -> Evaluation:
    """A Model's bits per character on a text file."""
    ids, skipped = encode_for_model(path, model.vocab, encoding, unknown)
    params = model.params
    if params.dtype != np.float32:
        params = params.astype(np.float32)
    bpc = evaluate_bpc(eval_kernels(model.spec), params, ids)
    return Evaluation(bpc, int(ids.size - 1), skipped)
