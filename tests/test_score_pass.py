"""The sampler's scoring pass asked to keep each step's logits and every layer's state (what
charrnn.analysis shows) against the NumPy reference (tests/reference.py), on one thread and two,
and charrnn.analysis's bits against eval's pass, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from charrnn.analysis import Scorer, score_ids
from charrnn.errors import InputError
from charrnn.kernels.sampler import run_parts
from charrnn.model.checkpoint import load_model, save_model
from charrnn.sampling import BatchSampler
from tests import reference
from tests.model_support import CELL_CASES, CHARS, VOCAB, make_params, text_ids


def scored(sampler, ids, calls, record=True):
    """One stream read through `ids` in `calls` pieces (the state carried): (log_probs (T,),
    logits (T, vocab), record (T, L, K, H), the last state), the last step's target 0."""
    spec = sampler.spec
    states = sampler.new_states(1)
    targets = np.append(ids[1:], 0)
    out = []
    for piece, goal in zip(np.array_split(ids, calls), np.array_split(targets, calls), strict=True):
        T = piece.size
        log_probs = np.empty((1, T))
        logits = np.full((1, T, spec.vocab_size), np.nan, dtype=np.float32) if record else None
        states_kept = np.full((1, T, *states.shape[1:]), np.nan, dtype=np.float32) if record else None
        sampler.score(states, piece[None].copy(), goal[None].copy(), log_probs, logits=logits, record=states_kept)
        out.append((log_probs[0], logits[0] if record else None, states_kept[0] if record else None))
    log_probs = np.concatenate([o[0] for o in out])
    if not record:
        return log_probs, None, None, states
    return log_probs, np.concatenate([o[1] for o in out]), np.concatenate([o[2] for o in out]), states


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell, layers", CELL_CASES)
def test_recorded_logits_and_states_equal_the_numpy_reference(cell, layers, threads):
    params = make_params(cell, layers)
    ids = text_ids(150)
    sampler = BatchSampler(params, VOCAB, threads=threads)
    assert sampler.parts == threads
    log_probs, logits, record, last = scored(sampler, ids, calls=3)
    p = {name: params[name].astype(np.float64) for name in params.names()}
    h, c = reference.states(cell, p, ids, layers)  # (T, L, H) each
    np.testing.assert_allclose(record[:, :, 0], h, atol=5e-5)  # every layer's h after each step
    if cell == "lstm":
        np.testing.assert_allclose(record[:, :, 1], c, atol=1e-4)
    else:
        assert record.shape[2] == 1
    np.testing.assert_allclose(logits, h[:, -1] @ p["V"] + p["b_y"], atol=1e-4)
    np.testing.assert_array_equal(record[-1], last[0])
    # Keeping them changes nothing else, to the bit.
    plain_log_probs, _, _, plain_last = scored(sampler, ids, calls=3, record=False)
    np.testing.assert_array_equal(log_probs, plain_log_probs)
    np.testing.assert_array_equal(last, plain_last)
    # And the kept logits give the scored log probabilities.
    z = logits[:-1].astype(np.float64)
    peak = z.max(axis=1, keepdims=True)
    from_logits = z[np.arange(ids.size - 1), ids[1:]] - (peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1)))
    np.testing.assert_allclose(log_probs[:-1], from_logits, atol=1e-6)


@pytest.mark.parametrize("cell, layers", [("rnn", 2), ("gru", 1), ("lstm", 2)])
def test_two_threads_keep_the_same_bits_as_one_for_every_stream(cell, layers):
    """Three streams (each thread scoring its share of them) on one thread and two, and the
    kernel's outer loop as plain Python (NUMBA_DISABLE_JIT's path): the same bits."""
    params = make_params(cell, layers)
    inputs = np.ascontiguousarray(np.stack([text_ids(90, seed) for seed in (1, 2, 3)]))  # (3, T)
    targets = np.ascontiguousarray(np.roll(inputs, -1, axis=1))
    results = []
    for threads, kernel in ((1, None), (2, None), (2, run_parts.py_func)):
        sampler = BatchSampler(params, VOCAB, threads=threads)
        states = sampler.new_states(3)
        log_probs = np.zeros(inputs.shape)
        logits = np.zeros((*inputs.shape, len(CHARS)), dtype=np.float32)
        record = np.zeros((*inputs.shape, *states.shape[1:]), dtype=np.float32)
        if kernel is None:
            sampler.score(states, inputs, targets, log_probs, logits=logits, record=record)
        else:  # both parts, one after the other
            nothing = (
                np.zeros((3, 0)),
                np.ones(3),
                np.zeros(3, dtype=np.int64),
                np.ones(3),
                np.zeros(3, dtype=bool),
                np.zeros((3, 0), dtype=np.int64),
            )
            arguments = sampler._arguments(2, states, inputs, *nothing, targets, log_probs, logits, record)
            kernel(0, 2, *arguments)
        results.append((log_probs, logits, record, states))
    for other in results[1:2]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(results[0], results[2], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.isfinite(results[0][1]).all() and (results[0][2] != 0).any(axis=(1, 2, 3, 4)).all()


def test_kept_arrays_are_checked():
    sampler = BatchSampler(make_params("gru", 1), VOCAB, threads=1)
    states = sampler.new_states(1)
    ids = text_ids(10)[None]
    for name, bad in (
        ("logits", np.zeros((1, 10, len(CHARS)))),  # float64
        ("logits", np.zeros((1, 9, len(CHARS)), dtype=np.float32)),
        ("record", np.zeros((1, 10, 2, 1, 16), dtype=np.float32)),
        ("record", np.zeros((1, 10, 1, 1, 32), dtype=np.float32)[..., ::2]),
    ):
        with pytest.raises(InputError, match=f"{name} must be a C-contiguous float32 array"):
            sampler.score(states, ids, ids, np.zeros((1, 10)), **{name: bad})


@pytest.fixture(scope="module")
def lstm_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("score-pass") / "m"
    save_model(directory, make_params("lstm", 2), VOCAB, {"step": 1})
    return load_model(directory)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_bits_are_evals_log_probabilities_to_the_bit(lstm_model, threads, monkeypatch):
    """charrnn.analysis scores by eval's pass: each character's bits are -log2 of the log
    probability eval sums, exactly, across its windows (a small SCORE_CHUNK: several)."""
    monkeypatch.setattr("charrnn.analysis.SCORE_CHUNK", 64)
    ids = text_ids(300)
    text = VOCAB.decode(ids)
    result = score_ids(Scorer(lstm_model, threads=threads), text, ids.astype(np.int32), top=3, layer=1, units="0-3")
    eval_sampler = BatchSampler(lstm_model.params, lstm_model.vocab, threads=threads)
    log_probs = np.empty((1, ids.size - 1))
    eval_sampler.score(eval_sampler.new_states(1), ids[None, :-1].copy(), ids[None, 1:].copy(), log_probs)
    np.testing.assert_array_equal(result.bits[1:], log_probs[0] / -math.log(2.0))
    _, logits, record, _ = scored(eval_sampler, ids, calls=1)
    np.testing.assert_array_equal(result.h, record[:, 1, 0, :4])
    np.testing.assert_array_equal(result.c, record[:, 1, 1, :4])
    z = logits[:-1].astype(np.float64)
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    expected = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(result.top_ids[1:], expected)
    np.testing.assert_allclose(result.top_probs[1:], np.take_along_axis(probs, expected, axis=1), atol=1e-12)
