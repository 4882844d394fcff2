"""Model directories from someone else: every hostile model.npz or meta.json is a one-line
ModelFormatError found from the archive's listing and headers, before any array is read."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.errors import CharRNNError, ModelFormatError
from charrnn.model import checkpoint
from charrnn.model.params import init_params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab


def _save(directory, cell="rnn", layers=1, hidden=6):
    vocab = Vocab(tuple("\n abc"))
    params = init_params(ModelSpec(cell, layers, hidden, len(vocab)), np.random.default_rng(0))
    checkpoint.save_model(directory, params, vocab, {"step": 1, "best_val_bpc": 2.0})
    return directory


@pytest.fixture
def model_dir(tmp_path):
    return _save(tmp_path / "m")


def _arrays(directory):
    with np.load(directory / "model.npz", allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _npy_header(shape, descr="<f4") -> bytes:
    """A .npy version 1.0 header declaring `shape` (no data follows)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    text += " " * (63 - (len(text) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin-1")


def _one_line_error(directory, *words):
    with pytest.raises(ModelFormatError) as info:
        checkpoint.load_model(directory)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_npz_reader_refuses_nothing_a_real_model_holds(model_dir):
    checkpoint.load_model(model_dir)
    checkpoint.load_model(checkpoint.resolve_model_dir("shakespeare"))  # format 1
    checkpoint.load_model(checkpoint.resolve_model_dir("shakespeare-lstm"))  # format 2


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("layers", 1_000_000_000, ["layers 1000000000 is over"]),
        ("hidden", 10**12, ["hidden 1000000000000 is over"]),
        ("layers", 2, ["missing arrays: U.1"]),
        ("hidden", 7, ["U.0 has shape (5, 6), expected (5, 7)"]),
    ],
)
def test_a_meta_json_asking_for_a_huge_or_other_model_is_one_line(model_dir, field, value, words):
    meta = json.loads((model_dir / "meta.json").read_text())
    meta[field] = value
    (model_dir / "meta.json").write_text(json.dumps(meta))
    _one_line_error(model_dir, *words)


def test_a_member_declaring_a_huge_shape_is_refused_from_its_header(model_dir):
    arrays = _arrays(model_dir)
    with zipfile.ZipFile(model_dir / "model.npz", "w") as archive:
        for name, array in arrays.items():
            if name == "W.0":  # a header for 10^12 floats, and no data
                archive.writestr("W.0.npy", _npy_header((10**6, 10**6)))
            else:
                buffer = io.BytesIO()
                np.save(buffer, array)
                archive.writestr(f"{name}.npy", buffer.getvalue())
    _one_line_error(model_dir, "model.npz")


def test_a_compressed_member_that_would_expand_without_limit_is_refused(model_dir):
    arrays = _arrays(model_dir)
    big = np.zeros(32 * 1024 * 1024, dtype=np.float32)  # 128 MB of zeros: ~130 kB deflated
    arrays["W.0"] = big
    np.savez_compressed(model_dir / "model.npz", **arrays)
    assert (model_dir / "model.npz").stat().st_size < 1 << 20
    _one_line_error(model_dir, "model.npz", "declare")


@pytest.mark.parametrize("dtype", [np.int64, np.complex64, "U3"])
def test_arrays_that_are_not_floats_are_refused(model_dir, dtype):
    arrays = _arrays(model_dir)
    arrays["b_y"] = np.zeros(arrays["b_y"].shape, dtype=dtype)
    np.savez(model_dir / "model.npz", **arrays)
    _one_line_error(model_dir, "b_y", "not floating point")


def test_a_member_that_is_not_an_array_is_refused(model_dir):
    with zipfile.ZipFile(model_dir / "model.npz", "a") as archive:
        archive.writestr("notes.txt", b"hello")
    _one_line_error(model_dir, "notes.txt")


def test_a_vocabulary_with_a_lone_surrogate_is_refused(model_dir):
    text = (model_dir / "meta.json").read_text()
    meta = json.loads(text)
    meta["vocab"] = ["\n", " ", "a", "b", "\ud800"]
    (model_dir / "meta.json").write_text(json.dumps(meta))  # ASCII-escaped: valid JSON
    _one_line_error(model_dir, "vocabulary")


def test_memory_error_while_loading_is_one_line(model_dir, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(checkpoint.Params, "from_arrays", no_memory)
    _one_line_error(model_dir, "too large")


def test_hostile_files_through_the_cli_are_one_line_errors(model_dir):
    meta = json.loads((model_dir / "meta.json").read_text())
    meta["layers"] = 10**9
    (model_dir / "meta.json").write_text(json.dumps(meta))
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "sample", str(model_dir), "--length", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "layers 1000000000 is over" in result.stderr and result.stdout == ""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_to_the_archive_is_a_model_error_or_a_whole_model(tmp_path_factory, data):
    directory = _save(tmp_path_factory.mktemp("fuzz"), cell=data.draw(st.sampled_from(["rnn", "gru"])))
    path = directory / "model.npz"
    blob = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    path.write_bytes(bytes(blob))
    try:
        model = checkpoint.load_model(directory)
    except CharRNNError as error:
        assert "\n" not in str(error)
    else:
        assert np.isfinite(model.params.flat).all()


# ----------------------------------------------------------------------------------------------
# training_state.npz: what --resume reads is checked the same way


def _state_dir(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    arrays = {"params": np.zeros(10, np.float32), "state": np.zeros((1, 1, 1, 4), np.float32), "opt_v": np.zeros(10)}
    record = {
        "step": 3,
        "elapsed": 1.0,
        "optimizer_steps": 3,
        "rng_state": {},
        "config": {},
        "corpus": {"path": "x.txt", "sha256": "0"},
        "vocab": ["a"],
        "budget": {"steps": 5},
    }
    checkpoint.save_training_state(directory, arrays, record)
    return directory


def _state_arrays(directory):
    with np.load(directory / checkpoint.STATE_FILE, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def test_a_real_training_state_loads(tmp_path):
    arrays, record = checkpoint.load_training_state(_state_dir(tmp_path))
    assert record["step"] == 3 and arrays["params"].shape == (10,)


def test_a_training_state_that_would_expand_without_limit_is_refused_unread(tmp_path, monkeypatch):
    directory = _state_dir(tmp_path)
    arrays = _state_arrays(directory)
    arrays["opt_v"] = np.zeros(64 * 1024 * 1024, dtype=np.float32)  # 256 MB of zeros: ~260 kB deflated
    np.savez_compressed(directory / checkpoint.STATE_FILE, **arrays)

    def never(*args, **kwargs):
        raise AssertionError("the arrays were read")

    monkeypatch.setattr(checkpoint, "_load_npz", never)
    with pytest.raises(ModelFormatError, match="declare") as info:
        checkpoint.load_training_state(directory)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, array", [("opt_v", np.zeros(10, np.int64)), ("info_json", np.zeros((2, 2), np.uint8))])
def test_training_state_arrays_of_another_type_are_refused(tmp_path, name, array):
    directory = _state_dir(tmp_path)
    arrays = _state_arrays(directory)
    arrays[name] = array
    np.savez(directory / checkpoint.STATE_FILE, **arrays)
    with pytest.raises(ModelFormatError, match=name):
        checkpoint.load_training_state(directory)
