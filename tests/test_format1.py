"""A model written by charrnn before format 2 (format 1: a one-layer vanilla RNN's U, W, V, b_h,
b_y) still loads, samples, evaluates and resumes.

tests/fixtures/format1 was made by charrnn 0.1.0 (commit 9967d90): a tiny model trained 30 steps
on corpus.txt, the sample it wrote, and the validation it reached when resumed to step 60."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from charrnn.corpus.text import load_corpus
from charrnn.model import checkpoint
from charrnn.model.legacy import format1_flat_order
from charrnn.sampling import sample
from charrnn.training.batches import split_train_val
from charrnn.training.evaluate import evaluate_file
from charrnn.training.loop import Budget, train

FIXTURE = Path(__file__).parent / "fixtures" / "format1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def test_it_loads_as_a_one_layer_vanilla_rnn():
    model = checkpoint.load_model(FIXTURE / "model")
    assert model.meta["format_version"] == 1
    assert (model.spec.cell, model.spec.layers, model.spec.hidden) == ("rnn", 1, 8)
    with np.load(FIXTURE / "model" / "model.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["U", "V", "W", "b_h", "b_y"]
        np.testing.assert_array_equal(model.params["W.0"], npz["W"])
        np.testing.assert_array_equal(model.params["b.0"], npz["b_h"])


def test_it_samples_the_text_it_sampled_when_it_was_made():
    text = sample(
        FIXTURE / "model",
        EXPECTED["sample_length"],
        prime=EXPECTED["sample_prime"],
        seed=EXPECTED["sample_seed"],
        temperature=1.0,
    )
    assert text == EXPECTED["sample"]


def test_it_evaluates_to_its_recorded_validation_bpc(tmp_path):
    vocab, ids = load_corpus(FIXTURE / "corpus.txt")
    _, val = split_train_val(ids, 0.05)
    val_file = tmp_path / "val.txt"
    val_file.write_text(vocab.decode(val))
    result = evaluate_file(checkpoint.load_model(FIXTURE / "model"), val_file)
    assert result.bpc == pytest.approx(EXPECTED["best_val_bpc"], rel=1e-5)


def test_it_resumes_where_it_stopped(tmp_path):
    """Resuming the format-1 training state (a (B, H) hidden state, a config without cell, layers
    or dropout) runs exactly as resuming the same state written the format-2 way; and it learns
    on as charrnn 0.1 did (the weights themselves are chaotic at this learning rate: the kernels'
    rounding differs from 0.1's by 1e-5 at step 30, so they are not compared)."""
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(FIXTURE / "model", old)
    shutil.copytree(FIXTURE / "model", new)
    arrays, info = checkpoint.load_training_state(new)
    arrays["state"] = arrays.pop("hidden").reshape(4, 1, 1, 8)
    order = format1_flat_order(checkpoint.load_model(new).spec)  # U, W, V, b_h, b_y -> format 2
    for name in ("params", "opt_m", "opt_v"):
        arrays[name] = arrays[name][order]
    info["config"].update(cell="rnn", layers=1, dropout=0.0)
    checkpoint.save_training_state(new, arrays, info)
    results = [train(FIXTURE / "corpus.txt", d, resume=True, budget=Budget(steps=60), threads=1) for d in (old, new)]
    assert [r.step for r in results] == [60, 60]
    np.testing.assert_array_equal(
        checkpoint.load_training_state(old)[0]["params"], checkpoint.load_training_state(new)[0]["params"]
    )
    assert results[0].best_val_bpc == results[1].best_val_bpc
    assert results[0].best_val_bpc == pytest.approx(EXPECTED["resumed_to_60_best_val_bpc"], rel=0.03)
    assert results[0].best_val_bpc < EXPECTED["best_val_bpc"] - 0.2
    assert checkpoint.load_model(old).meta["format_version"] == 2  # saved anew in format 2


def test_info_and_eval_commands_read_it():
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "charrnn", *args], capture_output=True, text=True, timeout=300)

    info = run("info", str(FIXTURE / "model"))
    assert info.returncode == 0, info.stderr
    assert "vanilla RNN, 1 layer of 8 units" in info.stdout and "format      1" in info.stdout
    scored = run("eval", str(FIXTURE / "model"), str(FIXTURE / "corpus.txt"))
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout.endswith("bits per character over 2,999 characters\n")
