"""model.npz and meta.json are one save's pair: a process killed between their two renames leaves
the new pair once the directory is next read, never the new weights with the old meta.json."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from charrnn import atomic
from charrnn.model import checkpoint
from charrnn.model.params import init_params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab

VOCAB = Vocab(tuple("\n abc"))


def _params(seed, hidden=6):
    return init_params(ModelSpec("rnn", 1, hidden, len(VOCAB)), np.random.default_rng(seed))


class Killed(BaseException):
    """The process dies here: nothing after it runs, no cleanup."""


def _kill_at_rename_of(monkeypatch, name):
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == name:
            raise Killed
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "replace", replace)


@pytest.mark.parametrize("hidden_b", [6, 8])  # same shape, and a different shape
def test_a_kill_between_the_two_renames_leaves_the_new_pair(tmp_path, monkeypatch, hidden_b):
    a, b = _params(1), _params(2, hidden_b)
    checkpoint.save_model(tmp_path, a, VOCAB, {"step": 100, "best_val_bpc": 3.0})
    _kill_at_rename_of(monkeypatch, checkpoint.META_FILE)
    with pytest.raises(Killed):
        checkpoint.save_model(tmp_path, b, VOCAB, {"step": 200, "best_val_bpc": 2.0})
    monkeypatch.undo()
    model = checkpoint.load_model(tmp_path)
    assert model.meta["step"] == 200 and model.spec.hidden == hidden_b
    np.testing.assert_array_equal(model.params.flat, b.flat)
    assert not list(tmp_path.glob(".*"))  # no journal, no temporary left


def test_a_kill_before_the_first_rename_leaves_the_old_pair(tmp_path, monkeypatch):
    a, b = _params(1), _params(2)
    checkpoint.save_model(tmp_path, a, VOCAB, {"step": 100, "best_val_bpc": 3.0})
    _kill_at_rename_of(monkeypatch, checkpoint.PAIR_JOURNAL)
    with pytest.raises(Killed):
        checkpoint.save_model(tmp_path, b, VOCAB, {"step": 200, "best_val_bpc": 2.0})
    monkeypatch.undo()
    checkpoint.remove_stale_temporaries(tmp_path)
    model = checkpoint.load_model(tmp_path)
    assert model.meta["step"] == 100
    np.testing.assert_array_equal(model.params.flat, a.flat)


def test_a_kill_while_the_journal_is_written_leaves_no_temporary(tmp_path):
    """A kill can land while the journal's own temporary is on disk (before its rename: no pair
    rename has begun); resuming removes it with the others."""
    stale = [tmp_path / f".{name}.x1y2.tmp" for name in (checkpoint.PAIR_JOURNAL, checkpoint.MODEL_FILE)]
    for path in stale:
        path.write_bytes(b"half")
    checkpoint.remove_stale_temporaries(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic.atomic_write(target, b"new")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640 and target.read_bytes() == b"new"


def test_the_umask_is_read_without_being_changed(monkeypatch):
    old = os.umask(0o027)
    try:

        def no_umask(mask):
            raise AssertionError("os.umask called")

        if os.path.exists("/proc/self/status"):
            monkeypatch.setattr(atomic.os, "umask", no_umask)
        assert atomic.current_umask() == 0o027
        assert atomic.new_file_mode() == 0o640
    finally:
        monkeypatch.undo()
        os.umask(old)


@pytest.mark.parametrize("name", [".", "..", "...", "a/b", "", "../x", "a\x00"])
def test_dot_names_and_paths_are_never_trial_names(tmp_path, name):
    from charrnn.errors import InputError
    from charrnn.sweep import layout
    from charrnn.sweep.sink import TrialSink

    assert not layout.is_trial_name(name)
    with pytest.raises(InputError):
        layout.trial_dir(tmp_path, name)
    with pytest.raises(ValueError):
        TrialSink(str(tmp_path / "trials"), "corpus.txt")._dir(name)
    assert layout.is_trial_name("trial_00003") and layout.is_trial_name("a.b-c")
