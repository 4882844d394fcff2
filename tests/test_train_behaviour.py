"""Training behaviour through the public surfaces only: `charrnn.training.loop.train(...)` and its events,
the `charrnn` command (click's CliRunner, in-process), and the files of the model directory.

Budgets (--minutes and its ETA, --epochs), the state reset at each epoch, --sample-every, resuming
from a damaged training_state.npz, every load_model refusal, --force, --seed, --encoding, the
rmsprop and adagrad optimizers, and an infinite loss. Array names are never assumed: they are
read from the files, so these tests hold across model formats.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_text

from charrnn.cli import main
from charrnn.errors import ModelFormatError, TrainingDiverged
from charrnn.model import checkpoint
from charrnn.training.loop import Budget, train

TINY = {"hidden": 24, "seq_length": 16, "batch_size": 4, "eval_every": 1000}
TINY_CLI = ["--hidden", "24", "--seq-length", "16", "--batch-size", "4", "--threads", "1"]
STATE_RECORD = "info_json"  # the JSON record inside training_state.npz (README: the model directory)


@pytest.fixture
def text(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(3000))
    return path


def run(text_path, out, events: list | None = None, **kwargs):
    kwargs.setdefault("overrides", TINY)
    kwargs.setdefault("threads", 1)
    return train(text_path, out, on_event=None if events is None else events.append, **kwargs)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_cli_error(result, *fragments) -> str:
    """A handled one-line error: exit 1, no exception but click's exit, one line on stderr."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def steps_per_epoch(events) -> int:
    start = next(e for e in events if e.kind == "start")
    return int(re.search(r"([\d,]+) steps per epoch", start.text).group(1).replace(",", ""))


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def state_arrays(out: Path) -> dict[str, np.ndarray]:
    """The training state's arrays, its JSON record left out (it holds the elapsed time)."""
    return {n: a for n, a in npz_arrays(out / checkpoint.STATE_FILE).items() if n != STATE_RECORD}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def carried_state_name(arrays: dict[str, np.ndarray]) -> str:
    """The carried recurrent state: the one array of two or more dimensions (weights, moments and
    the record are flat)."""
    names = [n for n, a in arrays.items() if a.ndim >= 2]
    assert len(names) == 1, {n: a.shape for n, a in arrays.items()}
    return names[0]


def assert_same_arrays(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# --minutes and the ETA; --epochs and the state reset at each epoch


class TickingClock:
    """Stands in for the time module of charrnn.training.loop, progress and saving: each
    perf_counter() call is TICK seconds after the one before, so that a time budget is a count of
    the loop's clock readings, whatever the machine's load."""

    TICK = 0.01

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        self.now += self.TICK
        return self.now


def test_a_minutes_budget_stops_on_time_and_the_eta_counts_down(text, tmp_path, monkeypatch):
    import charrnn.training.loop
    import charrnn.training.progress
    import charrnn.training.saving

    clock = TickingClock()  # one clock for the loop, its step events and its checkpoints
    for module in (charrnn.training.loop, charrnn.training.progress, charrnn.training.saving):
        monkeypatch.setattr(module, "time", clock)
    events = []
    limit = 0.02 * 60
    result = run(text, tmp_path / "m", events, budget=Budget(minutes=0.02))
    # The first clock reading past the limit stops the run: a step reads the clock 3 times.
    assert limit <= result.elapsed <= limit + 4 * TickingClock.TICK, result.elapsed
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) >= 2 and all(e.eta_seconds is not None for e in steps)
    for event in steps:
        assert 0 <= event.eta_seconds <= limit - event.elapsed + 1.0, (event.eta_seconds, event.elapsed)
    assert steps[-1].eta_seconds < steps[0].eta_seconds
    # The budget counts the whole run: a resume with 0.03 minutes in all trains about 0.6 s more.
    more = run(None, tmp_path / "m", resume=True, budget=Budget(minutes=0.03), overrides={})
    assert more.step > result.step
    assert 0.03 * 60 <= more.elapsed <= 0.03 * 60 + 4 * TickingClock.TICK, more.elapsed


def test_the_cli_shows_the_eta(text, tmp_path):
    result = cli("train", text, "--out", tmp_path / "m", *TINY_CLI, "--minutes", "0.01")
    assert result.exit_code == 0, result.output
    assert re.search(r"\| ETA \d+:\d\d", result.output), result.output


def test_whichever_budget_comes_first_stops_the_run(text, tmp_path):
    by_steps = run(text, tmp_path / "a", budget=Budget(steps=7, minutes=10))
    assert by_steps.step == 7
    by_time = run(text, tmp_path / "b", budget=Budget(steps=10**7, minutes=0.01))
    assert by_time.step < 10**7 and by_time.elapsed >= 0.3


def test_an_epochs_budget_counts_whole_passes_over_the_text(text, tmp_path):
    events = []
    one = run(text, tmp_path / "m", events, budget=Budget(epochs=1))
    per_epoch = steps_per_epoch(events)
    assert one.step == per_epoch
    more = run(None, tmp_path / "m", resume=True, budget=Budget(epochs=2.5), overrides={})
    assert more.step == math.ceil(2.5 * per_epoch)


def _resume_two_steps_from(out: Path, scrambled: Path, step: int) -> tuple[dict, dict]:
    """Resume `out` and a copy whose carried state is scrambled, each for two steps."""
    shutil.copytree(out, scrambled)
    arrays = npz_arrays(scrambled / checkpoint.STATE_FILE)
    name = carried_state_name(arrays)
    arrays[name] = np.random.default_rng(5).uniform(-0.9, 0.9, arrays[name].shape).astype(arrays[name].dtype)
    write_npz(scrambled / checkpoint.STATE_FILE, arrays)
    for folder in (out, scrambled):
        run(None, folder, resume=True, budget=Budget(steps=step + 2), overrides={})
    return state_arrays(out), state_arrays(scrambled)


def test_each_epoch_starts_from_a_zero_state(text, tmp_path):
    """A run saved at the end of an epoch forgets its carried state; mid-epoch it does not."""
    events = []
    run(text, tmp_path / "end", events, budget=Budget(epochs=1))
    per_epoch = steps_per_epoch(events)
    plain, scrambled = _resume_two_steps_from(tmp_path / "end", tmp_path / "end-scrambled", per_epoch)
    assert_same_arrays(plain, scrambled)  # the new epoch reset the state: the scramble is gone
    # The control: mid-epoch the carried state matters, so the same scramble changes training.
    middle = per_epoch // 2
    run(text, tmp_path / "mid", budget=Budget(steps=middle))
    plain, scrambled = _resume_two_steps_from(tmp_path / "mid", tmp_path / "mid-scrambled", middle)
    assert any(not np.array_equal(plain[n], scrambled[n]) for n in plain)


# ---------------------------------------------------------------------------------------------
# --sample-every


def test_samples_are_printed_and_never_change_training(text, tmp_path):
    events = []
    overrides = {**TINY, "eval_every": 6}
    run(text, tmp_path / "with", events, overrides=overrides, budget=Budget(steps=12), sample_every=4)
    samples = [e for e in events if e.kind == "sample"]
    assert [e.step for e in samples] == [4, 8, 12]
    assert all(len(e.text) > 0 for e in samples)
    run(text, tmp_path / "without", overrides=overrides, budget=Budget(steps=12))
    assert_same_arrays(state_arrays(tmp_path / "with"), state_arrays(tmp_path / "without"))
    assert_same_arrays(
        npz_arrays(tmp_path / "with" / checkpoint.MODEL_FILE), npz_arrays(tmp_path / "without" / checkpoint.MODEL_FILE)
    )

    def logged(name):
        return [(r["step"], r["train_loss"], r["val_bpc"]) for r in checkpoint.read_metrics(tmp_path / name)]

    assert logged("with") == logged("without") and len(logged("with")) == 2


def test_the_cli_prints_the_samples(text, tmp_path):
    result = cli("train", text, "--out", tmp_path / "m", *TINY_CLI, "--steps", 6, "--sample-every", 3)
    assert result.exit_code == 0, result.output
    assert "--- sample at step 3 ---" in result.output and "--- sample at step 6 ---" in result.output


# ---------------------------------------------------------------------------------------------
# Resuming from a damaged training_state.npz: one line, nothing changed


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A model directory trained 10 steps (saved at steps 5 and 10), and its corpus beside it."""
    root = tmp_path_factory.mktemp("saved")
    (root / "corpus.txt").write_text(make_text(3000))
    run(root / "corpus.txt", root / "m", overrides={**TINY, "eval_every": 5}, budget=Budget(steps=10))
    return root / "m"


def _state_bytes_without(arrays: dict, drop: str) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{n: a for n, a in arrays.items() if n != drop})
    return buffer.getvalue()


def _with_record(arrays: dict, record: bytes) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{**arrays, STATE_RECORD: np.frombuffer(record, dtype=np.uint8)})
    return buffer.getvalue()


def _reshaped(arrays: dict, name: str) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{**arrays, name: np.concatenate([arrays[name].ravel()] * 2)})
    return buffer.getvalue()


def _broken_files(arrays: dict) -> dict[str, bytes]:
    """A file that is not a whole training state: cut short by a full disk or a copy, garbage."""
    whole = _with_record(arrays, arrays[STATE_RECORD].tobytes())
    return {
        "empty": b"",
        "not a zip": b"this is not a training state",
        "cut in half": whole[: len(whole) // 2],
        "cut at the end": whole[:-10],
        "no record": _state_bytes_without(arrays, STATE_RECORD),
        "record not JSON": _with_record(arrays, b"{not json"),
    }


def _wrong_contents(arrays: dict) -> dict[str, bytes]:
    """A whole .npz whose record or arrays are not what a resume needs."""
    record = json.loads(arrays[STATE_RECORD].tobytes())
    found = {
        "record not an object": _with_record(arrays, b"[1, 2, 3]"),
        "record without its step": _with_record(
            arrays, json.dumps({k: v for k, v in record.items() if k != "step"}).encode()
        ),
    }
    for name in arrays:
        if name != STATE_RECORD:
            found[f"no {name}"] = _state_bytes_without(arrays, name)
            found[f"{name} of the wrong shape"] = _reshaped(arrays, name)
    return found


def test_resuming_from_a_broken_training_state_is_a_one_line_error(saved_run, tmp_path):
    _assert_each_refused(saved_run, tmp_path, _broken_files)


def test_resuming_from_a_training_state_with_wrong_contents_is_a_one_line_error(saved_run, tmp_path):
    _assert_each_refused(saved_run, tmp_path, _wrong_contents)


def _assert_each_refused(saved_run: Path, tmp_path: Path, damages) -> None:
    """Every damage in one test (the array names are the file's own, known only at run time)."""
    arrays = npz_arrays(saved_run / checkpoint.STATE_FILE)
    failures = []
    for label, data in damages(arrays).items():
        out = tmp_path / re.sub(r"\W+", "-", label)
        shutil.copytree(saved_run, out)
        (out / checkpoint.STATE_FILE).write_bytes(data)
        before = snapshot(out)
        result = cli("train", "--out", out, "--resume", "--threads", "1", "--steps", 20)
        try:
            assert_cli_error(result, checkpoint.STATE_FILE)
            assert snapshot(out) == before
        except AssertionError as error:
            failures.append(f"{label}: {str(error).splitlines()[0]} | {result.exception!r}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------------
# load_model: every refusal, on real files


def _load_error(model: Path) -> str:
    with pytest.raises(ModelFormatError) as info:
        checkpoint.load_model(model)
    message = str(info.value)
    assert "\n" not in message
    assert_cli_error(cli("sample", model, "--length", 5))
    return message


def _first_matrix(model: Path) -> tuple[dict, str]:
    arrays = npz_arrays(model / checkpoint.MODEL_FILE)
    return arrays, sorted(n for n, a in arrays.items() if a.ndim == 2)[0]


def test_load_model_refuses_an_array_of_the_wrong_shape(saved_run, tmp_path):
    model = shutil.copytree(saved_run, tmp_path / "m")
    arrays, name = _first_matrix(model)
    arrays[name] = np.zeros((arrays[name].shape[0] + 1, arrays[name].shape[1]), np.float32)
    write_npz(model / checkpoint.MODEL_FILE, arrays)
    assert checkpoint.MODEL_FILE in _load_error(model)


def test_load_model_refuses_a_missing_array(saved_run, tmp_path):
    model = shutil.copytree(saved_run, tmp_path / "m")
    arrays, name = _first_matrix(model)
    del arrays[name]
    write_npz(model / checkpoint.MODEL_FILE, arrays)
    assert name in _load_error(model)


@pytest.mark.parametrize("also_the_size", [False, True])
def test_load_model_refuses_a_vocabulary_of_another_size(saved_run, tmp_path, also_the_size):
    model = shutil.copytree(saved_run, tmp_path / "m")
    meta = json.loads((model / checkpoint.META_FILE).read_text(encoding="utf-8"))
    meta["vocab"] = meta["vocab"][:-1]
    if also_the_size and "vocab_size" in meta:  # agreeing with itself, not with the arrays
        meta["vocab_size"] = len(meta["vocab"])
    (model / checkpoint.META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    _load_error(model)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_load_model_refuses_weights_that_are_not_finite(saved_run, tmp_path, value):
    model = shutil.copytree(saved_run, tmp_path / "m")
    arrays, name = _first_matrix(model)
    arrays[name][0, 0] = value
    write_npz(model / checkpoint.MODEL_FILE, arrays)
    assert "finite" in _load_error(model)


# ---------------------------------------------------------------------------------------------
# --force, --seed, --encoding, rmsprop and adagrad, through the command line


def test_force_replaces_a_model_and_nothing_else_does(text, tmp_path):
    out = tmp_path / "m"
    assert cli("train", text, "--out", out, *TINY_CLI, "--steps", 6, "--eval-every", 3).exit_code == 0
    before = snapshot(out)
    assert_cli_error(cli("train", text, "--out", out, *TINY_CLI, "--steps", 4), "--force", "--resume")
    assert snapshot(out) == before
    replaced = cli(
        "train",
        text,
        "--out",
        out,
        "--hidden",
        12,
        "--seq-length",
        16,
        "--batch-size",
        4,
        "--threads",
        1,
        "--steps",
        4,
        "--eval-every",
        2,
        "--force",
    )
    assert replaced.exit_code == 0, replaced.output
    meta = checkpoint.read_meta(out)
    assert meta["hidden"] == 12 and meta["step"] <= 4
    assert [r["step"] for r in checkpoint.read_metrics(out)] == [2, 4]  # the old log is gone
    assert checkpoint.load_model(out).hidden == 12


def test_the_same_seed_gives_the_same_model_and_another_does_not(text, tmp_path):
    def model_of(name, seed):
        result = cli("train", text, "--out", tmp_path / name, *TINY_CLI, "--steps", 6, "--seed", seed)
        assert result.exit_code == 0, result.output
        return npz_arrays(tmp_path / name / checkpoint.MODEL_FILE)

    first, again, other = model_of("a", 1), model_of("b", 1), model_of("c", 2)
    assert_same_arrays(first, again)
    assert any(not np.array_equal(first[n], other[n]) for n in first)


def test_encoding_latin1_end_to_end(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(make_text(3000).replace("e", "\u00e9").encode("latin-1"))
    out = tmp_path / "m"
    assert_cli_error(cli("train", path, "--out", out, *TINY_CLI, "--steps", 4), "--encoding")
    trained = cli("train", path, "--out", out, *TINY_CLI, "--steps", 4, "--encoding", "latin-1")
    assert trained.exit_code == 0, trained.output
    meta = json.loads(cli("info", out, "--json").stdout)
    assert meta["encoding"] in ("latin-1", "iso8859-1", "latin_1") and "\u00e9" in meta["vocab"]
    resumed = cli("train", "--out", out, "--resume", "--threads", "1", "--steps", 6)  # keeps latin-1
    assert resumed.exit_code == 0, resumed.output
    assert "\u00e9" in cli("sample", out, "--prime", "\u00e9", "--length", 5).stdout


@pytest.mark.parametrize("optimizer", ["rmsprop", "adagrad"])
def test_optimizers_train_and_resume_bit_for_bit(text, tmp_path, optimizer):
    common = [*TINY_CLI, "--optimizer", optimizer, "--lr-schedule", "constant", "--eval-every", 4]
    straight = cli("train", text, "--out", tmp_path / "straight", *common, "--steps", 8)
    assert straight.exit_code == 0, straight.output
    assert checkpoint.read_meta(tmp_path / "straight")["config"]["optimizer"] == optimizer
    first = cli("train", text, "--out", tmp_path / "halves", *common, "--steps", 4)
    assert first.exit_code == 0, first.output
    second = cli("train", "--out", tmp_path / "halves", "--resume", "--threads", "1", "--steps", 8)
    assert second.exit_code == 0, second.output
    assert_same_arrays(state_arrays(tmp_path / "straight"), state_arrays(tmp_path / "halves"))
    bpc = [r["val_bpc"] for r in checkpoint.read_metrics(tmp_path / "straight")]
    assert bpc == [r["val_bpc"] for r in checkpoint.read_metrics(tmp_path / "halves")]
    assert all(math.isfinite(v) for v in bpc)


# ---------------------------------------------------------------------------------------------
# An infinite loss


def test_an_infinite_loss_stops_training_and_leaves_the_saved_model(text, tmp_path, monkeypatch):
    window = pytest.importorskip(
        "charrnn.kernels.window",
        reason="the loss is patched at charrnn.kernels.window.Kernels, which this tree does not have yet",
    )
    out = tmp_path / "m"
    run(text, out, overrides={**TINY, "eval_every": 2}, budget=Budget(steps=4))
    before = snapshot(out)
    real = window.Kernels.loss_and_grad
    calls = []

    def loss_and_grad(self, *args, **kwargs):
        loss = real(self, *args, **kwargs)
        calls.append(loss)
        return math.inf if len(calls) > 1 else loss  # the warm-up (or a first step), then inf

    monkeypatch.setattr(window.Kernels, "loss_and_grad", loss_and_grad)
    with pytest.raises(TrainingDiverged, match="infinite") as info:
        run(None, out, resume=True, budget=Budget(steps=20), overrides={})
    assert "\n" not in str(info.value) and "NaN" not in str(info.value)
    assert snapshot(out) == before
