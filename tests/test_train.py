import math
import os
import signal

import numpy as np
import pytest

import charrnn.training.progress as progress_module
from charrnn.errors import InputError, TrainingDiverged
from charrnn.model import checkpoint
from charrnn.training.config import learning_rate
from charrnn.training.loop import Budget, TrainConfig, train

TINY = {"cell": "rnn", "layers": 1, "hidden": 24, "seq_length": 16, "batch_size": 4, "eval_every": 20, "lr": 1e-2}


def weights(directory):
    arrays, _ = checkpoint.load_training_state(directory)
    return arrays["params"]


def test_training_learns_and_writes_a_complete_model_directory(text_file, tmp_path):
    events = []
    result = train(
        text_file, tmp_path / "m", overrides=TINY, budget=Budget(steps=200), threads=1, on_event=events.append
    )
    out = tmp_path / "m"
    model = checkpoint.load_model(out)
    uniform_bpc = math.log2(len(model.vocab))
    assert result.step == 200 and not result.interrupted
    assert result.best_val_bpc < 0.75 * uniform_bpc
    assert model.meta["best_val_bpc"] == pytest.approx(result.best_val_bpc)
    assert model.meta["config"]["hidden"] == 24
    assert model.meta["corpus"]["name"] == "corpus"
    assert len(model.meta["corpus"]["sha256"]) == 64
    metrics = checkpoint.read_metrics(out)
    assert [m["step"] for m in metrics] == [20, 40, 60, 80, 100, 120, 140, 160, 180, 200]
    assert set(metrics[0]) == {"step", "elapsed", "train_loss", "val_bpc", "chars_per_sec"}
    assert metrics[-1]["val_bpc"] < metrics[0]["val_bpc"]
    kinds = {e.kind for e in events}
    assert {"start", "step", "eval", "done"} <= kinds
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.npz", "meta.json", "training_state.npz", "metrics.jsonl"]
    )


def test_validation_bpc_matches_a_direct_computation(text_file, tmp_path):
    from reference import forward

    from charrnn.corpus.text import load_corpus
    from charrnn.training.batches import split_train_val

    train(text_file, tmp_path, overrides=TINY, budget=Budget(steps=20), threads=1)
    model = checkpoint.load_model(tmp_path)
    _, ids = load_corpus(text_file)
    _, val = split_train_val(ids, TINY.get("val_frac", 0.05))
    p = {k: v.astype(np.float64) for k, v in model.params.arrays().items()}
    inputs, targets = val[None, :-1].astype(np.int64), val[None, 1:].astype(np.int64)
    nats = forward("rnn", p, inputs, targets, np.zeros(model.spec.state_shape(1)))[0]
    assert model.meta["best_val_bpc"] == pytest.approx(nats / math.log(2), rel=1e-4)


def interrupt_at(step):
    def on_event(event):
        if event.kind == "step" and event.step == step:
            os.kill(os.getpid(), signal.SIGINT)

    return on_event


@pytest.mark.parametrize("threads", [1, 2])
def test_an_interrupted_and_resumed_run_ends_where_an_uninterrupted_one_does(text_file, tmp_path, monkeypatch, threads):
    monkeypatch.setattr(progress_module, "PROGRESS_SECONDS", 0.0)  # a step event after every step
    full = train(text_file, tmp_path / "full", overrides=TINY, budget=Budget(steps=70), threads=threads)
    cut = train(
        text_file, tmp_path / "cut", overrides=TINY, budget=Budget(steps=70), threads=threads, on_event=interrupt_at(33)
    )
    assert cut.interrupted and cut.step == 33
    resumed = train(None, tmp_path / "cut", resume=True, threads=threads)
    assert resumed.step == 70 and not resumed.interrupted
    np.testing.assert_array_equal(weights(tmp_path / "cut"), weights(tmp_path / "full"))
    assert resumed.best_val_bpc == full.best_val_bpc
    assert [m["step"] for m in checkpoint.read_metrics(tmp_path / "cut")] == [
        m["step"] for m in checkpoint.read_metrics(tmp_path / "full")
    ]


def test_interrupting_before_the_first_evaluation_still_leaves_a_model(text_file, tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "PROGRESS_SECONDS", 0.0)
    result = train(text_file, tmp_path, overrides=TINY, budget=Budget(steps=70), threads=1, on_event=interrupt_at(3))
    assert result.interrupted
    assert checkpoint.load_model(tmp_path).meta["step"] == 3


def test_a_resumed_run_can_be_given_a_longer_budget(text_file, tmp_path):
    train(text_file, tmp_path, overrides=TINY, budget=Budget(steps=20), threads=1)
    result = train(text_file, tmp_path, resume=True, budget=Budget(steps=45), threads=1)
    assert result.step == 45


def test_a_nan_loss_stops_training_and_keeps_the_last_good_model(text_file, tmp_path, monkeypatch):
    from charrnn.kernels.window import Kernels

    original = Kernels.loss_and_grad
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        loss = original(self, *args, **kwargs)
        return float("nan") if calls["n"] > 1 + 25 else loss  # one warm-up call, then 25 steps

    monkeypatch.setattr(Kernels, "loss_and_grad", poisoned)
    with pytest.raises(TrainingDiverged, match="NaN at step 26"):
        train(text_file, tmp_path, overrides=TINY, budget=Budget(steps=100), threads=1)
    model = checkpoint.load_model(tmp_path)
    assert model.meta["step"] == 20
    assert np.isfinite(model.params.flat).all()
    assert checkpoint.load_training_state(tmp_path)[1]["step"] == 20


def test_an_existing_model_is_kept_unless_forced(text_file, tmp_path):
    train(text_file, tmp_path, overrides=TINY, budget=Budget(steps=20), threads=1)
    before = (tmp_path / "model.npz").read_bytes()
    with pytest.raises(InputError, match="--resume.*--force"):
        train(text_file, tmp_path, overrides=TINY, budget=Budget(steps=20), threads=1)
    assert (tmp_path / "model.npz").read_bytes() == before
    train(text_file, tmp_path, overrides={**TINY, "seed": 5}, budget=Budget(steps=20), threads=1, force=True)
    assert (tmp_path / "model.npz").read_bytes() != before
    assert len(checkpoint.read_metrics(tmp_path)) == 1


def test_resume_refuses_changed_settings_and_a_different_text(text_file, tmp_path):
    train(text_file, tmp_path, overrides=TINY, budget=Budget(steps=20), threads=1)
    with pytest.raises(InputError, match="--hidden 24"):
        train(text_file, tmp_path, overrides={"hidden": 32}, resume=True, threads=1)
    other = tmp_path.parent / "other.txt"
    other.write_text(text_file.read_text() + "more")
    with pytest.raises(InputError, match="not the text this model was trained on"):
        train(other, tmp_path, resume=True, threads=1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden": 0}, "--hidden"),
        ({"val_frac": 0.9}, "--val-frac"),
        ({"lr": -1.0}, "--lr"),
        ({"optimizer": "sgd"}, "--optimizer"),
    ],
)
def test_nonsense_settings_are_refused(text_file, tmp_path, overrides, message):
    with pytest.raises(InputError, match=message):
        train(text_file, tmp_path, overrides=overrides, budget=Budget(steps=1))


def test_a_zero_budget_is_refused(text_file, tmp_path):
    with pytest.raises(InputError, match="--minutes"):
        train(text_file, tmp_path, overrides=TINY, budget=Budget(minutes=0))


def test_learning_rate_schedule():
    config = TrainConfig(lr=1.0, min_lr_frac=0.1)
    assert learning_rate(config, 0.0) == pytest.approx(1.0)
    assert learning_rate(config, 0.5) == pytest.approx(0.55)
    assert learning_rate(config, 1.0) == pytest.approx(0.1)
    assert learning_rate(TrainConfig(lr=1.0, lr_schedule="constant"), 0.7) == 1.0


def test_resuming_with_another_thread_count_says_it_will_not_match_bit_for_bit(text_file, tmp_path):
    train(text_file, tmp_path, overrides=TINY, budget=Budget(steps=20), threads=1)
    events = []
    train(text_file, tmp_path, resume=True, budget=Budget(steps=25), threads=2, on_event=events.append)
    notes = [e.text for e in events if e.kind == "note"]
    assert len(notes) == 1 and "--threads 1" in notes[0] and "bit for bit" in notes[0]
    events.clear()
    train(text_file, tmp_path, resume=True, budget=Budget(steps=30), threads=2, on_event=events.append)
    assert not [e for e in events if e.kind == "note"]


GATED = {"hidden": 16, "seq_length": 12, "batch_size": 4, "eval_every": 15, "lr": 1e-2, "layers": 2, "dropout": 0.3}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_cell_resumes_bit_for_bit_with_dropout_at_two_threads(text_file, tmp_path, monkeypatch, cell):
    monkeypatch.setattr(progress_module, "PROGRESS_SECONDS", 0.0)
    settings = {**GATED, "cell": cell}
    full = train(text_file, tmp_path / "full", overrides=settings, budget=Budget(steps=40), threads=2)
    cut = train(
        text_file, tmp_path / "cut", overrides=settings, budget=Budget(steps=40), threads=2, on_event=interrupt_at(17)
    )
    assert cut.interrupted and cut.step == 17
    resumed = train(None, tmp_path / "cut", resume=True, threads=2)
    assert resumed.step == 40
    np.testing.assert_array_equal(weights(tmp_path / "cut"), weights(tmp_path / "full"))
    assert resumed.best_val_bpc == full.best_val_bpc
    model = checkpoint.load_model(tmp_path / "full")
    assert (model.spec.cell, model.spec.layers, model.spec.hidden) == (cell, 2, 16)
    assert model.meta["config"]["dropout"] == 0.3 and model.meta["format_version"] == 2


def test_dropout_changes_training_and_the_seed_changes_the_masks(text_file, tmp_path):
    def final(name, **extra):
        train(
            text_file, tmp_path / name, overrides={**GATED, "cell": "lstm", **extra}, budget=Budget(steps=6), threads=1
        )
        return weights(tmp_path / name)

    plain, dropped = final("plain", dropout=0.0), final("dropped")
    reseeded = final("reseeded", seed=1)
    assert not np.array_equal(plain, dropped)
    assert not np.array_equal(dropped, reseeded)


def test_a_new_run_takes_its_cells_defaults_and_a_resumed_one_its_saved_settings(text_file, tmp_path):
    from charrnn.training.config import CELL_DEFAULTS

    settings = {"hidden": 8, "seq_length": 8, "batch_size": 2, "eval_every": 5, "cell": "gru"}
    train(text_file, tmp_path, overrides=settings, budget=Budget(steps=5), threads=1)
    config = checkpoint.load_model(tmp_path).meta["config"]
    assert config["layers"] == CELL_DEFAULTS["gru"]["layers"]
    assert config["dropout"] == CELL_DEFAULTS["gru"]["dropout"]
    assert config["lr"] == CELL_DEFAULTS["gru"]["lr"] and config["hidden"] == 8
    with pytest.raises(InputError, match="--cell gru"):
        train(text_file, tmp_path, overrides={"cell": "lstm"}, resume=True, threads=1)


def test_training_samples_continue_their_stream_across_a_resume(text_file, tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "PROGRESS_SECONDS", 0.0)

    def samples(name, steps, resume=False, on_event=None):
        events = []

        def record(event):
            events.append(event)
            if on_event:
                on_event(event)

        train(
            None if resume else text_file,
            tmp_path / name,
            overrides={} if resume else TINY,
            budget=Budget(steps=steps),
            threads=1,
            sample_every=10,
            sample_length=30,
            resume=resume,
            on_event=record,
        )
        return [e.text for e in events if e.kind == "sample"]

    whole = samples("whole", 40)
    first = samples("cut", 40, on_event=interrupt_at(25))
    rest = samples("cut", 40, resume=True)
    assert len(whole) == 4 and first + rest == whole
