"""bench/core_check.py's comparison, which bench/arm64_check.sh's verdict rests on: two runs agree
only with the same cells, the same sampled text, and every bpc within the tolerance."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "core_check.py"
_SPEC = importlib.util.spec_from_file_location("core_check", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
core_check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(core_check)


def _run(model_dir: str = "/tmp/a") -> dict:
    cell = {
        "val_bpc_3_steps": 6.1234,
        "val_bpc_resumed_5_steps": 5.9876,
        "sample": "ROMEO the king\n",
        "eval": {"model": model_dir, "text": model_dir + "/corpus.txt", "bpc": 5.95, "chars": 12000, "skipped": {}},
    }
    return {name: copy.deepcopy(cell) for name, _ in core_check.CELLS}


def test_the_same_numbers_on_other_paths_agree():
    assert core_check.compare(_run("/tmp/a"), _run("/var/tmp/b")) == []


def test_bpc_within_the_tolerance_agrees():
    other = _run()
    other["gru"]["val_bpc_3_steps"] += core_check.TOLERANCE / 2
    other["lstm"]["eval"]["bpc"] -= core_check.TOLERANCE / 2
    assert core_check.compare(_run(), other) == []


@pytest.mark.parametrize(
    "where", [("val_bpc_3_steps",), ("val_bpc_resumed_5_steps",), ("eval", "bpc")], ids=lambda w: ".".join(w)
)
def test_bpc_beyond_the_tolerance_is_reported(where):
    other = _run()
    target = other["rnn"]
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] += 3 * core_check.TOLERANCE
    problems = core_check.compare(_run(), other)
    assert len(problems) == 1 and problems[0].startswith("rnn")


def test_a_missing_bpc_is_reported():
    other = _run()
    other["lstm"]["val_bpc_resumed_5_steps"] = None
    assert len(core_check.compare(_run(), other)) == 1


def test_another_sampled_text_is_reported():
    other = _run()
    other["gru"]["sample"] = "ROMEO the kinh\n"
    problems = core_check.compare(_run(), other)
    assert len(problems) == 1 and "sample" in problems[0]


def test_another_character_count_is_reported():
    other = _run()
    other["rnn"]["eval"]["chars"] = 11999
    assert len(core_check.compare(_run(), other)) == 1


def test_a_cell_missing_from_one_run_is_reported():
    other = _run()
    del other["gru"]
    assert core_check.compare(_run(), other) == ["gru: only in one run"]


def test_the_corpus_is_fixed():
    text = core_check.corpus()
    assert len(text) == 12_000 and text == core_check.corpus()
    assert "RO" in text  # the sampling prime's characters are in every model's vocabulary
