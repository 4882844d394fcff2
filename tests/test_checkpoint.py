import json
import os
import stat

import numpy as np
import pytest

from charrnn import atomic
from charrnn.errors import ModelFormatError
from charrnn.model import checkpoint
from charrnn.model.params import init_params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab


@pytest.fixture
def model_dir(tmp_path):
    vocab = Vocab(tuple("\n abc\u00e9"))
    params = init_params(ModelSpec("rnn", 1, 6, len(vocab)), np.random.default_rng(0))
    checkpoint.save_model(tmp_path, params, vocab, {"step": 7, "best_val_bpc": 2.5})
    return tmp_path, params, vocab


def test_model_round_trips(model_dir):
    path, params, vocab = model_dir
    model = checkpoint.load_model(path)
    assert model.vocab == vocab
    assert model.meta["step"] == 7 and model.meta["format_version"] == checkpoint.FORMAT_VERSION == 2
    assert (model.meta["cell"], model.meta["layers"], model.meta["hidden"]) == ("rnn", 1, 6)
    np.testing.assert_array_equal(model.params.flat, params.flat)
    with np.load(path / "model.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(["U.0", "W.0", "b.0", "V", "b_y"])
    assert not list(path.glob(".*.tmp")), "no temporary file is left behind"


@pytest.mark.parametrize(
    "cell, layers, names",
    [
        ("lstm", 2, ["U.0", "W.0", "b.0", "U.1", "W.1", "b.1", "V", "b_y"]),
        ("gru", 2, ["U.0", "W.0", "b.0", "b_hn.0", "U.1", "W.1", "b.1", "b_hn.1", "V", "b_y"]),
    ],
)
def test_gated_deep_models_are_written_in_format_2_as_pinned(tmp_path, cell, layers, names):
    vocab = Vocab(tuple("abcde"))
    spec = ModelSpec(cell, layers, 4, len(vocab))
    params = init_params(spec, np.random.default_rng(1))
    checkpoint.save_model(tmp_path, params, vocab, {"step": 1})
    gates = {"lstm": 4, "gru": 3}[cell]
    with np.load(tmp_path / "model.npz", allow_pickle=False) as npz:
        assert list(npz.files) == names
        assert npz["U.0"].shape == (5, gates * 4) and npz["U.1"].shape == (4, gates * 4)
        assert npz["W.1"].shape == (4, gates * 4) and npz["b.0"].shape == (gates * 4,)
        assert npz["V"].shape == (4, 5) and npz["b_y"].shape == (5,)
        assert all(npz[n].dtype == np.float32 for n in npz.files)
        if cell == "lstm":  # the forget block of b starts at 1
            np.testing.assert_array_equal(npz["b.0"], [0] * 4 + [1] * 4 + [0] * 8)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert (meta["format_version"], meta["cell"], meta["layers"]) == (2, cell, layers)
    model = checkpoint.load_model(tmp_path)
    assert model.spec == spec
    np.testing.assert_array_equal(model.params.flat, params.flat)


def test_arrays_of_another_layout_are_refused(model_dir):
    path, params, _ = model_dir
    meta = json.loads((path / "meta.json").read_text())
    meta["cell"] = "gru"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="missing arrays: b_hn.0"):
        checkpoint.load_model(path)
    meta["cell"], meta["layers"] = "rnn", 2
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="missing arrays: U.1"):
        checkpoint.load_model(path)
    meta["layers"], meta["cell"] = 1, "transformer"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="cell must be one of"):
        checkpoint.load_model(path)


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "meta.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic.atomic_write(target, b"new")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_written_files_get_the_usual_mode_not_mkstemps_private_one(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.atomic_write(tmp_path / "meta.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "meta.json").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "meta.json").unlink(), "not a model directory"),
        (lambda p: (p / "meta.json").write_text("{not json"), "corrupt"),
        (lambda p: (p / "meta.json").write_text(json.dumps({"format": "other"})), "not a charrnn model"),
        (lambda p: (p / "model.npz").write_bytes(b"PK\x03\x04 garbage"), "not a readable"),
        (lambda p: (p / "model.npz").unlink(), "missing"),
    ],
)
def test_damaged_directories_give_one_line_errors(model_dir, damage, message):
    path = model_dir[0]
    damage(path)
    with pytest.raises(ModelFormatError, match=message) as info:
        checkpoint.load_model(path)
    assert "\n" not in str(info.value)


def test_newer_format_versions_are_refused(model_dir):
    path = model_dir[0]
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="format version 99"):
        checkpoint.load_model(path)


class _LeavesAMarker:
    """Unpickling this creates the file `path`: a harmless stand-in for running any code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_arrays_are_never_loaded(model_dir, tmp_path_factory):
    path = model_dir[0]
    marker = tmp_path_factory.mktemp("pickle") / "unpickled"
    with np.load(path / "model.npz", allow_pickle=False) as npz:  # whatever arrays this format has
        arrays = {name: npz[name] for name in npz.files}
    victim = sorted(arrays)[0]
    evil = np.empty(1, dtype=object)
    evil[0] = _LeavesAMarker(marker)
    arrays[victim] = evil  # every other array whole: only the pickle can be refused
    np.savez(path / "model.npz", **arrays)
    with np.load(path / "model.npz", allow_pickle=True) as npz:  # the payload is live ...
        npz[victim]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelFormatError) as info:  # ... and charrnn never runs it
        checkpoint.load_model(path)
    assert "model.npz" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


RECORD = {
    "step": 3,
    "elapsed": 1.5,
    "optimizer_steps": 3,
    "rng_state": {"state": 1},
    "config": {},
    "corpus": {"path": "a.txt", "sha256": "00"},
    "vocab": ["a"],
    "budget": {"steps": 9},
}


def test_training_state_is_one_file_with_its_record(tmp_path):
    arrays = {"params": np.arange(4.0), "opt_v": np.zeros(4), "state": np.zeros((1, 1, 1, 2))}
    checkpoint.save_training_state(tmp_path, arrays, RECORD)
    loaded, info = checkpoint.load_training_state(tmp_path)
    np.testing.assert_array_equal(loaded["params"], np.arange(4.0))
    assert info == RECORD
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.STATE_FILE]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda a, r: r.pop("step"), "no 'step'"),
        (lambda a, r: r.update(elapsed="soon"), "'elapsed' is str"),
        (lambda a, r: r.update(corpus={"path": "a.txt"}), "sha256"),
        (lambda a, r: r.update(budget={"hours": 1}), "budget"),
        (lambda a, r: a.pop("opt_v"), "no opt_v array"),
        (lambda a, r: a.pop("state"), "no state array"),
    ],
)
def test_a_training_state_without_what_resuming_needs_is_refused(tmp_path, damage, message):
    arrays = {"params": np.arange(4.0), "opt_v": np.zeros(4), "state": np.zeros((1, 1, 1, 2))}
    record = json.loads(json.dumps(RECORD))
    damage(arrays, record)
    checkpoint.save_training_state(tmp_path, arrays, record)
    with pytest.raises(ModelFormatError, match=message):
        checkpoint.load_training_state(tmp_path)


def test_save_model_writes_both_files_or_neither(model_dir, monkeypatch):
    """A full disk while meta.json is written leaves the old model.npz too: the pair stays whole."""
    path, params, vocab = model_dir
    before = {name: (path / name).read_bytes() for name in ("model.npz", "meta.json")}
    real_fsync = os.fsync
    calls = []

    def fsync_fails_second(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync_fails_second)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save_model(path, params.copy(), vocab, {"step": 8})
    assert {name: (path / name).read_bytes() for name in before} == before
    assert not list(path.glob(".*.tmp"))


def test_a_metrics_line_cut_short_costs_only_itself(tmp_path):
    checkpoint.append_metrics(tmp_path, {"step": 1})
    with open(tmp_path / checkpoint.METRICS_FILE, "a") as f:
        f.write('{"step": 2, "val')  # a disk that filled mid-line
    checkpoint.append_metrics(tmp_path, {"step": 3})
    assert [r["step"] for r in checkpoint.read_metrics(tmp_path)] == [1, 3]


def test_metrics_skip_a_torn_line_and_truncate_for_resume(tmp_path):
    for step in (10, 20, 30):
        checkpoint.append_metrics(tmp_path, {"step": step})
    with open(tmp_path / checkpoint.METRICS_FILE, "a") as f:
        f.write('{"step": 4')  # a write cut short by a kill
    assert [r["step"] for r in checkpoint.read_metrics(tmp_path)] == [10, 20, 30]
    checkpoint.truncate_metrics(tmp_path, 20)
    assert [r["step"] for r in checkpoint.read_metrics(tmp_path)] == [10, 20]
