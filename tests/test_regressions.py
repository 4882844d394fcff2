"""Behaviours a deliberate breakage once slipped past the suite (issue 17): each test here fails
when its behaviour goes.

- model.npz holds the best model by validation, not the last;
- the recurrent state carries from one training step to the next within an epoch;
- `charrnn eval` prints bits per character (not nats), for every cell, through the command.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_text

import charrnn.training.saving as saving_module
from charrnn.model import checkpoint
from charrnn.model.params import init_params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab
from charrnn.training.loop import Budget, train
from tests import reference

TINY = {"hidden": 16, "seq_length": 8, "batch_size": 4, "eval_every": 1000}


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(3000))
    return path


def _params_in_state(directory):
    arrays, _ = checkpoint.load_training_state(directory)
    return arrays["params"].copy()


def test_the_saved_model_is_the_best_by_validation_not_the_last(text, tmp_path, monkeypatch):
    scores = iter([3.0, 2.0, 2.5, 2.8])  # the second validation is the best; later ones worse
    seen = []

    def scripted(kernels, params, ids, *args, **kwargs):
        if len(ids) <= 2:  # the warm-up before the clock starts
            return 5.0
        seen.append(params.flat.copy())
        return next(scores, 9.0)

    monkeypatch.setattr(saving_module, "estimate_bpc", scripted)
    out = tmp_path / "m"
    train(text, out, overrides={**TINY, "eval_every": 5}, budget=Budget(steps=20), threads=1)
    assert len(seen) == 4
    assert not np.array_equal(seen[1], seen[3])  # the weights did move on
    model = checkpoint.load_model(out)
    np.testing.assert_array_equal(model.params.flat, seen[1].astype(np.float32))
    assert model.meta["step"] == 10 and model.meta["best_val_bpc_estimate"] == 2.0


def test_the_state_carries_from_step_to_step_within_an_epoch(text, tmp_path):
    """Three steps in one run equal one step then a resume for two; with the carried state zeroed
    before the resume they differ: the second step started from the state the first one left."""
    whole, carried, cut = tmp_path / "whole", tmp_path / "carried", tmp_path / "cut"
    train(text, whole, overrides=TINY, budget=Budget(steps=3), threads=1)
    train(text, carried, overrides=TINY, budget=Budget(steps=1), threads=1)
    shutil.copytree(carried, cut)
    arrays, info = checkpoint.load_training_state(cut)
    assert np.abs(arrays["state"]).max() > 0  # the state after step 1
    arrays["state"][...] = 0.0
    checkpoint.save_training_state(cut, arrays, info)
    for folder in (carried, cut):
        train(None, folder, resume=True, overrides={}, budget=Budget(steps=3), threads=1)
    np.testing.assert_array_equal(_params_in_state(carried), _params_in_state(whole))
    assert not np.array_equal(_params_in_state(cut), _params_in_state(whole))


# ------------------------------------------------------------------------------------------------
# charrnn eval prints bits, checked against an independent NumPy computation


EVAL_TEXT = "the cat sat on the mat. the dog ate the hat!\n" * 6


def _reference_bpc(cell, params, vocab, text) -> float:
    """Mean -log2 p(next char) over the text, the state carried from the first character (the
    NumPy reference, float64)."""
    ids = np.array([vocab.index(c) for c in text], dtype=np.int64)
    p = {name: np.asarray(a, dtype=np.float64) for name, a in params.arrays().items()}
    state0 = np.zeros(params.spec.state_shape(1))
    nats, _, _ = reference.forward(cell, p, ids[None, :-1], ids[None, 1:], state0)
    return nats / math.log(2)


@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("lstm", 2), ("gru", 2)])
def test_eval_prints_bits_per_character_for_every_cell(tmp_path, cell, layers):
    vocab = Vocab(tuple(sorted(set(EVAL_TEXT))))
    params = init_params(ModelSpec(cell, layers, 12, len(vocab)), np.random.default_rng(3), input_scale=1.0)
    checkpoint.save_model(tmp_path / "m", params, vocab, {"step": 1, "best_val_bpc": 1.0})
    (tmp_path / "t.txt").write_text(EVAL_TEXT)
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "eval", str(tmp_path / "m"), str(tmp_path / "t.txt")],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"(\d+\.\d{4}) bits per character over ([\d,]+) characters\n", result.stdout)
    assert match, result.stdout
    expected = _reference_bpc(cell, params, vocab, EVAL_TEXT)
    assert abs(float(match.group(1)) - expected) < 1e-3, (match.group(1), expected)
    assert abs(float(match.group(1)) - expected * math.log(2)) > 0.05  # nats would be far off
    assert int(match.group(2).replace(",", "")) == len(EVAL_TEXT) - 1  # every character after the first
