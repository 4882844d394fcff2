"""Validation and `charrnn eval`: the exact number (one state carried through the text, run by the
sampler's scoring pass) against a plain NumPy forward, and training's estimate (pieces side by
side, each warmed up) against the exact number."""

from __future__ import annotations

import math

import numpy as np
import pytest

from charrnn.model.vocab import Vocab
from charrnn.sampling import BatchSampler
from charrnn.training.evaluate import estimate_bpc, estimate_kernels, exact_bpc
from tests import reference
from tests.model_support import CELL_CASES, CHARS, make_params, text_ids


def reference_log_probs(params, ids):
    """Natural-log probabilities of ids[1:], the state carried from zero, in float64 NumPy."""
    p = {name: params[name].astype(np.float64) for name in params.names()}
    state = np.zeros(params.spec.state_shape(1))
    out = []
    for t in range(len(ids) - 1):
        loss, state, _ = reference.forward(params.spec.cell, p, ids[None, t : t + 1], ids[None, t + 1 : t + 2], state)
        out.append(-loss)
    return np.array(out)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell, layers", CELL_CASES)
def test_scoring_pass_gives_numpy_log_probabilities(cell, layers, threads):
    params = make_params(cell, layers)
    ids = text_ids(300)
    sampler = BatchSampler(params, Vocab(CHARS), threads=threads)
    states = sampler.new_states(1)
    log_probs = np.empty((1, len(ids) - 1))
    sampler.score(states, ids[None, :-1].copy(), ids[None, 1:].copy(), log_probs)
    np.testing.assert_allclose(log_probs[0], reference_log_probs(params, ids), atol=2e-5)


@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("gru", 2), ("lstm", 2)])
def test_scoring_pass_compiled_equals_its_python_form(cell, layers):
    """The kernel's outer loop run as plain Python (NUMBA_DISABLE_JIT's path) gives the same log
    probabilities and states, two parts run one after another."""
    from charrnn.kernels.sampler import run_parts

    params = make_params(cell, layers)
    ids = text_ids(120)
    sampler = BatchSampler(params, Vocab(CHARS), threads=2)
    results = []
    for kernel in (run_parts, run_parts.py_func):
        states = sampler.new_states(3)
        inputs = np.ascontiguousarray(np.stack([ids[:-1]] * 3))  # (3, T)
        targets = np.ascontiguousarray(np.stack([ids[1:]] * 3))
        log_probs = np.zeros(inputs.shape)
        nothing = (
            np.zeros((3, 0)),
            np.ones(3),
            np.zeros(3, dtype=np.int64),
            np.ones(3),
            np.zeros(3, dtype=bool),
            np.zeros((3, 0), dtype=np.int64),
        )
        kernel(0, sampler.parts, *sampler._arguments(sampler.parts, states, inputs, *nothing, targets, log_probs))
        results.append((log_probs, states))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-6)
    assert (results[0][0] < 0).all()


@pytest.mark.parametrize("cell, layers", CELL_CASES)
def test_exact_bpc_is_the_mean_of_the_numpy_log_probabilities(cell, layers, monkeypatch):
    import charrnn.training.evaluate as evaluate

    monkeypatch.setattr(evaluate, "EXACT_CHUNK", 70)  # the state carried across calls
    params = make_params(cell, layers)
    ids = text_ids(400)
    expected = -reference_log_probs(params, ids).mean() / math.log(2)
    assert exact_bpc(params, Vocab(CHARS), ids) == pytest.approx(expected, abs=2e-5)


@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("lstm", 2)])
def test_the_estimate_is_close_to_the_exact_number(cell, layers):
    params = make_params(cell, layers)
    ids = text_ids(40_000)
    exact = exact_bpc(params, Vocab(CHARS), ids)
    kernels = estimate_kernels(params.spec, threads=2)
    estimate = estimate_bpc(kernels, params, ids, warmup=64)
    assert abs(estimate - exact) < 0.002


def test_a_short_text_is_estimated_by_one_stream_exactly():
    params = make_params("gru", 1)
    ids = text_ids(500)
    kernels = estimate_kernels(params.spec, threads=1)
    assert estimate_bpc(kernels, params, ids) == pytest.approx(exact_bpc(params, Vocab(CHARS), ids), abs=2e-5)
