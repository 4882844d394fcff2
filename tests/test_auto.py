"""The automatic choice of model: deterministic given the budget, the text and the machine's probe;
used only when no model option is given; recorded, shown, and kept on resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from charrnn.model import checkpoint
from charrnn.training import auto
from charrnn.training import probe as probe_module
from charrnn.training.auto import CANDIDATES, choose, dropout_for
from charrnn.training.config import Budget
from charrnn.training.loop import train
from charrnn.training.probe import Probe, shape_key

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"seq_length": 16, "batch_size": 4, "eval_every": 20}


def fixed_probe(scale: float = 1.0) -> Probe:
    """Rates that fall with the recurrent work per character, as measured ones do."""
    gates = {"rnn": 1, "gru": 3, "lstm": 4}
    return Probe(
        {
            shape_key(c.cell, c.layers, c.hidden): scale * 4e9 / (c.layers * gates[c.cell] * c.hidden**2)
            for c in CANDIDATES
        },
        "fixed",
    )


def test_the_choice_is_a_function_of_budget_text_and_probe():
    probe = fixed_probe()
    first = choose(600.0, None, 1_000_000, 32, 64, probe)
    assert first == choose(600.0, None, 1_000_000, 32, 64, probe)
    assert choose(600.0, None, 1_000_000, 32, 64, fixed_probe(4.0)) != first  # the machine matters
    # A faster machine, or a longer budget, never chooses a smaller model.
    order = [(c.cell, c.layers, c.hidden) for c in CANDIDATES]
    sizes = [
        order.index((choice.cell, choice.layers, choice.hidden))
        for choice in (choose(minutes * 60.0, None, 1_000_000, 32, 64, probe) for minutes in (0.2, 1, 3, 10, 30, 60))
    ]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert order.index((first.cell, first.layers, first.hidden)) <= sizes[-1]


def test_the_largest_candidate_that_gets_its_steps_is_chosen():
    probe = fixed_probe()

    def shape(c):
        return (c.cell, c.layers, c.hidden)

    for before, candidate in zip(CANDIDATES, CANDIDATES[1:], strict=False):
        rate = probe.rate(*shape(candidate))
        seconds = candidate.min_steps * 32 * 64 / rate / (1 - auto.VALIDATION_SHARE)
        assert shape(choose(seconds * 1.01, None, 10**8, 32, 64, probe)) == shape(candidate)
        assert shape(choose(seconds * 0.99, None, 10**8, 32, 64, probe)) == shape(before)


def test_a_step_budget_needs_no_probe_and_dropout_follows_the_epochs():
    choice = choose(None, 2000, 1_000_000, 32, 64, None)
    assert (choice.cell, choice.layers, choice.hidden) == ("lstm", 2, 512)
    assert choice.epochs == pytest.approx(2000 * 32 * 64 / 1_000_000)
    assert choice.dropout == dropout_for(choice.epochs) == 0.1
    assert choose(None, 2000, 100_000_000, 32, 64, None).dropout == 0.0
    assert choose(None, 2000, 100_000, 32, 64, None).dropout == 0.25
    with pytest.raises(ValueError):
        choose(60.0, None, 1000, 32, 64, None)


def test_the_vanilla_rnn_gets_no_dropout_whatever_the_epochs():
    for train_chars in (10_000, 100_000, 1_000_000, 100_000_000):
        choice = choose(None, 100, train_chars, 32, 64, None)
        assert (choice.cell, choice.dropout) == ("rnn", 0.0)
    assert choose(None, 100, 10_000, 32, 64, None).epochs > 8  # where a gated cell would get 0.25


def test_a_new_run_without_model_options_gets_the_choice_and_records_it(text_file, tmp_path):
    events = []
    probe = fixed_probe()
    train(
        text_file,
        tmp_path,
        overrides=SMALL,
        budget=Budget(minutes=0.05, steps=3),
        threads=1,
        probe=probe,
        on_event=events.append,
    )
    expected = choose(3.0, 3, len(text_file.read_text()) * 0.95, 4, 16, probe)
    meta = checkpoint.read_meta(tmp_path)
    assert (meta["cell"], meta["layers"], meta["hidden"]) == (expected.cell, expected.layers, expected.hidden)
    assert meta["config"]["dropout"] == expected.dropout
    assert meta["auto_choice"]["reason"] == expected.reason
    notes = [e.text for e in events if e.kind == "note" and e.text.startswith("model: ")]
    assert len(notes) == 1 and expected.reason in notes[0]


def test_explicit_model_options_are_kept_exactly(text_file, tmp_path):
    train(
        text_file,
        tmp_path,
        overrides={**SMALL, "cell": "rnn", "hidden": 40},
        budget=Budget(steps=2),
        threads=1,
        probe=fixed_probe(),
    )
    meta = checkpoint.read_meta(tmp_path)
    assert (meta["cell"], meta["layers"], meta["hidden"]) == ("rnn", 1, 40)
    assert "auto_choice" not in meta


@pytest.mark.slow
def test_a_resumed_run_keeps_the_model_it_started_with(text_file, tmp_path):
    fast = Probe({key: 1e9 for key in fixed_probe().rates}, "fast")  # chooses the largest
    train(text_file, tmp_path, overrides=SMALL, budget=Budget(minutes=0.01), threads=1, probe=fast)
    first = checkpoint.read_meta(tmp_path)
    assert (first["layers"], first["hidden"]) == (CANDIDATES[-1].layers, CANDIDATES[-1].hidden)
    slow = Probe({key: 1.0 for key in fixed_probe().rates}, "slow")  # would choose the smallest
    train(text_file, tmp_path, resume=True, budget=Budget(minutes=0.02), threads=1, probe=slow)
    again = checkpoint.read_meta(tmp_path)
    assert (again["cell"], again["layers"], again["hidden"]) == (first["cell"], first["layers"], first["hidden"])
    assert again["auto_choice"] == first["auto_choice"]


def test_info_shows_the_choice(text_file, tmp_path):
    train(text_file, tmp_path, overrides=SMALL, budget=Budget(steps=2), threads=1)
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "info", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("chosen"))
    assert checkpoint.read_meta(tmp_path)["auto_choice"]["reason"] in line


def test_the_probe_is_measured_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv(probe_module.CACHE_ENV, str(tmp_path))
    calls = []
    monkeypatch.setattr(probe_module, "measure_rate", lambda spec, threads: calls.append(spec) or 1000.0)
    shapes = (("lstm", 1, 32), ("lstm", 2, 32))
    first, measured = probe_module.machine_probe(shapes, 1)
    assert measured and len(calls) == 2 and first.rate("lstm", 2, 32) == 1000.0
    second, measured = probe_module.machine_probe(shapes, 1)
    assert not measured and len(calls) == 2 and second == first
    (cache,) = tmp_path.glob("probe-*.json")
    assert json.loads(cache.read_text())["machine"] == first.machine
    other_threads, measured = probe_module.machine_probe(shapes, 2)  # another key: measured again
    assert measured and len(calls) == 4


def test_a_real_probe_measures_a_positive_rate():
    from charrnn.model.spec import ModelSpec

    assert probe_module.measure_rate(ModelSpec("lstm", 1, 16, 20), threads=1, seconds=0.05) > 0


@pytest.mark.slow
def test_an_automatic_run_resumes_bit_for_bit(text_file, tmp_path, monkeypatch):
    """The automatic model (here the steps budget's: chosen without a probe) resumes exactly, its
    dropout masks, its learning-rate schedule and its choice included."""
    import os
    import signal

    import numpy as np

    import charrnn.training.progress as progress

    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)  # a step event after every step
    # A small LSTM as the only candidate: the choice, with its dropout by the epochs, stays automatic.
    monkeypatch.setattr(auto, "CANDIDATES", (auto.Candidate("lstm", 2, 24, 0),))
    small = {"seq_length": 64, "batch_size": 8, "eval_every": 10}  # > 2 epochs of the text: dropout

    def interrupt_at(step):
        def on_event(event):
            if event.kind == "step" and event.step == step:
                os.kill(os.getpid(), signal.SIGINT)

        return on_event

    full = train(text_file, tmp_path / "full", overrides=small, budget=Budget(steps=25), threads=1)
    cut = train(
        text_file, tmp_path / "cut", overrides=small, budget=Budget(steps=25), threads=1, on_event=interrupt_at(12)
    )
    assert cut.interrupted and cut.step == 12
    resumed = train(None, tmp_path / "cut", resume=True, threads=1)
    assert resumed.step == 25
    full_meta, cut_meta = checkpoint.read_meta(tmp_path / "full"), checkpoint.read_meta(tmp_path / "cut")
    assert cut_meta["auto_choice"] == full_meta["auto_choice"] and full_meta["config"]["dropout"] > 0
    full_model = checkpoint.load_model(tmp_path / "full")
    np.testing.assert_array_equal(checkpoint.load_model(tmp_path / "cut").params.flat, full_model.params.flat)
    assert resumed.best_val_bpc == full.best_val_bpc
