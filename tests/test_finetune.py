"""Fine-tuning (`charrnn train --init-from`): the parent's weights at their new positions, new
characters predicted rarely, the parent recorded, resume, and the CLI's one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from logprobs_reference import logprobs, random_model

from charrnn.model.checkpoint import load_model, save_model
from charrnn.training import finetune
from charrnn.training.loop import Budget, train
from charrnn.training.run import Run

PARENT_TEXT = "abcde\n é"
NEW_TEXT = "the cat sat on a mat; béé éa ba~ " * 100


@pytest.fixture(params=["rnn", "lstm", "gru"])
def parent_dir(tmp_path, request):
    params, vocab = random_model(request.param, 2, 8, PARENT_TEXT + "ht", seed=3)
    directory = tmp_path / f"parent-{request.param}"
    save_model(directory, params, vocab, {"best_val_bpc": 3.5, "step": 7})
    return directory


@pytest.fixture
def new_text(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text(NEW_TEXT, encoding="utf-8")
    return path


def open_run(text, out, parent, **overrides):
    return Run(
        text, out, overrides, Budget(steps=1), False, False, "utf-8", 1, lambda event: None, None, init_from=str(parent)
    )


def test_old_characters_keep_their_log_probs_at_step_zero(parent_dir, new_text, tmp_path):
    parent = load_model(parent_dir)
    run = open_run(new_text, tmp_path / "tuned", parent_dir)
    vocab = run.vocab
    assert set(vocab.chars) == set(parent.vocab.chars) | set(NEW_TEXT)
    added = finetune.new_chars(parent.vocab, vocab)
    assert added and all(c not in parent.vocab.chars for c in added)
    text = "bead ébac\nhe cab"  # the parent's characters only
    old = logprobs(parent.params, [parent.vocab.index(c) for c in text])
    tuned = logprobs(run.params, [vocab.index(c) for c in text])
    positions = [vocab.index(c) for c in parent.vocab.chars]
    new_positions = [vocab.index(c) for c in added]
    new_mass = np.exp(tuned[:, new_positions]).sum(axis=1)  # (T,)
    # The parent's characters: its log-probabilities less the (small) mass of the new ones.
    np.testing.assert_allclose(tuned[:, positions], old + np.log1p(-new_mass)[:, None], rtol=0, atol=1e-9)
    # Each new character: well below uniform, and below the parent's least likely character.
    assert np.exp(tuned[:, new_positions]).max() < 0.1 / len(vocab)
    assert (tuned[:, new_positions].max(axis=1) < old.min(axis=1)).all()
    assert new_mass.max() < 0.01


def test_rows_and_columns_move_with_their_characters(parent_dir, new_text, tmp_path):
    parent = load_model(parent_dir)
    run = open_run(new_text, tmp_path / "tuned", parent_dir)
    for c in parent.vocab.chars:
        i, j = parent.vocab.index(c), run.vocab.index(c)
        np.testing.assert_array_equal(run.params["U.0"][j], parent.params["U.0"][i])
        np.testing.assert_array_equal(run.params.V[:, j], parent.params.V[:, i])
        assert run.params.b_y[j] == parent.params.b_y[i]
    for name in parent.params.names():
        if name not in ("U.0", "V", "b_y"):
            np.testing.assert_array_equal(run.params[name], parent.params[name])
    for c in finetune.new_chars(parent.vocab, run.vocab):
        j = run.vocab.index(c)
        assert np.abs(run.params["U.0"][j]).max() > 0  # a fresh row, not zeros
        assert not run.params.V[:, j].any()


def test_shape_carries_over_and_conflicts_are_refused(parent_dir, new_text, tmp_path):
    parent = load_model(parent_dir)
    run = open_run(new_text, tmp_path / "a", parent_dir, hidden=8, dropout=0.0)
    assert (run.config.cell, run.config.layers, run.config.hidden) == (parent.spec.cell, 2, 8)
    assert run.config.dropout == 0.0
    with pytest.raises(finetune.InputError, match="drop --hidden 9"):
        open_run(new_text, tmp_path / "b", parent_dir, hidden=9)


@pytest.mark.parametrize("parent_dir", ["lstm"], indirect=True)
def test_tuned_run_records_its_parent_and_resumes(parent_dir, new_text, tmp_path):
    out = tmp_path / "tuned"
    train(
        new_text,
        out,
        budget=Budget(steps=2),
        overrides={"eval_every": 1, "batch_size": 2, "seq_length": 8, "lr_schedule": "constant"},
        threads=1,
        init_from=str(parent_dir),
    )
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["parent"]["path"] == str(parent_dir.resolve())
    assert meta["parent"]["best_val_bpc"] == 3.5 and meta["parent"]["format_version"] == 2
    assert meta["parent"]["bundled"] is False
    vocab = meta["vocab"]
    result = train(None, out, budget=Budget(steps=4), resume=True, threads=1)
    assert result.step == 4
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["vocab"] == vocab and meta["parent"]["path"] == str(parent_dir.resolve())
    # The same run uninterrupted gives the same weights, bit for bit.
    straight = tmp_path / "straight"
    train(
        new_text,
        straight,
        budget=Budget(steps=4),
        overrides={"eval_every": 1, "batch_size": 2, "seq_length": 8, "lr_schedule": "constant"},
        threads=1,
        init_from=str(parent_dir),
    )
    a, b = np.load(out / "training_state.npz"), np.load(straight / "training_state.npz")
    np.testing.assert_array_equal(a["params"], b["params"])


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [sys.executable, "-m", "charrnn", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("parent_dir", ["gru"], indirect=True)
def test_cli_conflict_is_one_line(parent_dir, new_text, tmp_path):
    for extra, expected in ((["--cell", "lstm"], "drop --cell lstm"), (["--layers", "3"], "drop --layers 3")):
        done = _cli(
            "train", str(new_text), "--init-from", str(parent_dir), "--out", str(tmp_path / "x"), "--steps", "1", *extra
        )
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in done.stderr
    done = _cli(
        "train", str(new_text), "--init-from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y"), "--steps", "1"
    )
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("parent_dir", ["rnn"], indirect=True)
def test_info_shows_the_parent(parent_dir, new_text, tmp_path):
    out = tmp_path / "tuned"
    train(
        new_text,
        out,
        budget=Budget(steps=1),
        overrides={"batch_size": 2, "seq_length": 8},
        threads=1,
        init_from=str(parent_dir),
    )
    done = _cli("info", str(out))
    assert done.returncode == 0
    assert f"tuned from  {parent_dir} ({parent_dir.resolve()}; format 2, best 3.5000 bpc)" in done.stdout
