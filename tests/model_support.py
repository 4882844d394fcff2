"""Small models and texts with structure, shared by the tests of the scoring passes."""

from __future__ import annotations

import numpy as np

from charrnn.model.params import init_params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab

CHARS = tuple("\n !,.:ORaehilnostw")
VOCAB = Vocab(CHARS)
CELL_CASES = [("rnn", 1), ("rnn", 2), ("gru", 1), ("gru", 2), ("lstm", 1), ("lstm", 2)]


def make_params(cell, layers, hidden=16, seed=0):
    """Random parameters over CHARS, the biases moved off zero so every array matters."""
    rng = np.random.default_rng(seed)
    params = init_params(ModelSpec(cell, layers, hidden, len(CHARS)), rng, input_scale=1.5)
    for name in params.names():
        if params[name].ndim == 1:
            params[name][...] += rng.normal(0.0, 0.5, size=params[name].shape)
    return params


def text_ids(n, seed=1):
    """A text with structure (so a warmed-up state matters) as ids."""
    rng = np.random.default_rng(seed)
    words = ["Rose", "Olio", "the", "still", "Oh, ", "this: "]
    text = ""
    while len(text) < n:
        text += rng.choice(words) + (".\n" if rng.random() < 0.2 else " ")
    return VOCAB.encode(text[:n]).astype(np.int64)
