"""`charrnn score` and charrnn.analysis: per-character bits, guesses and activations against the
NumPy reference (tests/reference.py), eval's number, and the command line's error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference

from charrnn.analysis import SCORE_CHUNK as EVAL_CHUNK
from charrnn.analysis import (
    Scorer,
    encode_for_scoring,
    find_units,
    parse_units,
    preview_window,
    score_text,
    text_property,
)
from charrnn.errors import InputError
from charrnn.model.checkpoint import load_model, save_model
from charrnn.model.params import init_params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab
from charrnn.training.evaluate import evaluate_file

ROOT = Path(__file__).resolve().parent.parent
TEXT = ('The king said "go (now) to thee", and the queen (my lord) spoke.\nOf love and war: "shall I speak?"\n' * 12)[
    :700
]  # > 2 windows of EVAL_CHUNK
VOCAB = Vocab(tuple(sorted(set(TEXT + "\t\\"))))
CASES = [(cell, layers) for cell in ("rnn", "gru", "lstm") for layers in (1, 2)]


def make_model(directory: Path, cell: str, layers: int, hidden: int = 12, seed: int = 0):
    spec = ModelSpec(cell, layers, hidden, len(VOCAB))
    params = init_params(spec, np.random.default_rng(seed), input_scale=1.0)
    save_model(directory, params, VOCAB, {"step": 1})
    return load_model(directory)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("score-models")
    return {
        (cell, layers): make_model(root / f"{cell}{layers}", cell, layers, seed=i)
        for i, (cell, layers) in enumerate(CASES)
    }


def reference_of(model):
    p = {name: np.asarray(a, dtype=np.float64) for name, a in model.params.arrays().items()}
    ids = np.array([VOCAB.index(c) for c in TEXT])
    h, c = reference.states(model.spec.cell, p, ids, model.spec.layers)
    log2p = reference.next_char_log2probs(p, h[:, -1])  # after reading each character
    return ids, h, c, log2p


@pytest.mark.parametrize("cell,layers", CASES)
def test_bits_guesses_and_activations_equal_the_numpy_reference(models, cell, layers):
    model = models[(cell, layers)]
    ids, h, c, log2p = reference_of(model)
    layer = layers - 1
    result = score_text(model, TEXT, top=4, layer=layer, units=[0, 5, 11])
    expected_bits = -log2p[np.arange(len(TEXT) - 1), ids[1:]]
    assert np.isnan(result.bits[0])
    np.testing.assert_allclose(result.bits[1:], expected_bits, atol=2e-3)
    # The guesses: the reference's four most likely characters, most likely first.
    for t in (1, 2, 300, len(TEXT) - 1):
        order = np.argsort(-log2p[t - 1], kind="stable")[:4]
        np.testing.assert_allclose(result.top_probs[t], 2.0 ** log2p[t - 1][order], atol=1e-4)
        assert list(result.top_ids[t]) == list(order) or np.allclose(
            np.sort(log2p[t - 1][result.top_ids[t]]), np.sort(log2p[t - 1][order]), atol=1e-5
        )
    assert (result.top_ids[0] == -1).all()
    # Activations after reading each character, for the units asked.
    np.testing.assert_allclose(result.h, h[:, layer][:, [0, 5, 11]], atol=2e-4)
    if cell == "lstm":
        np.testing.assert_allclose(result.c, c[:, layer][:, [0, 5, 11]], atol=5e-4)
    else:
        assert result.c is None
    if layers == 2:  # and the first layer's
        first = score_text(model, TEXT, top=0, layer=0, units="0-2")
        np.testing.assert_allclose(first.h, h[:, 0, :3], atol=2e-4)


@pytest.mark.parametrize("cell,layers", [("lstm", 2), ("gru", 1)])
def test_the_mean_of_the_bits_is_evals_number(models, tmp_path, cell, layers):
    model = models[(cell, layers)]
    path = tmp_path / "text.txt"
    for n in (len(TEXT), EVAL_CHUNK + 1, EVAL_CHUNK + 2, 2):  # window edges, and the least
        path.write_text(TEXT[:n])
        result = score_text(model, TEXT[:n])
        assert result.chars == n - 1
        assert abs(result.bpc - evaluate_file(model, path).bpc) < 1e-6


def test_unknown_characters_stop_or_are_left_out(models):
    model = models[("lstm", 2)]
    odd = "The king€ said ✓ go"
    with pytest.raises(InputError, match="2 characters are not in the model's vocabulary: '€' '✓'"):
        score_text(model, odd)
    skipped = score_text(model, odd, unknown="skip")
    plain = score_text(model, "The king said  go")
    assert skipped.text == "The king said  go" and skipped.skipped == {"€": 1, "✓": 1}
    np.testing.assert_array_equal(skipped.bits[1:], plain.bits[1:])
    with pytest.raises(InputError, match="fewer than 2 characters"):
        score_text(model, "€T", unknown="skip")
    with pytest.raises(InputError, match="unknown must be error or skip"):
        encode_for_scoring("The", VOCAB, "drop")


def test_units_and_layers_are_checked():
    assert parse_units("0,5,10-12", 16) == [0, 5, 10, 11, 12]
    assert parse_units(None, 3) == parse_units("all", 3) == [0, 1, 2]
    assert parse_units([3, 1, 3], 4) == [3, 1]
    for bad, message in (
        ("5-2", "runs backwards"),
        ("a", "'a' is not a unit number"),
        ("16", "16 is not a unit of this model .units are 0 to 15"),
        ([], "no unit given"),
        ([True], "whole numbers"),
    ):
        with pytest.raises(InputError, match=message):
            parse_units(bad, 16)


def test_text_properties():
    text = 'a "b c" (d (e) f) g\nhi'
    np.testing.assert_array_equal(text_property("in-quotes", text)[:9], [0, 0, 1, 1, 1, 1, 0, 0, 0])
    parens = text_property("in-parens", text)
    assert parens[text.index("(")] == 1 and parens[text.index("f")] == 1
    assert parens[text.index("g")] == 0 and parens[text.rindex(")")] == 0 == parens[text.rindex(")") - 2] - 1
    assert list(text_property("line-position", "ab\ncd")) == [1, 2, 0, 1, 2]
    assert preview_window(np.r_[np.zeros(100), np.ones(10), np.zeros(100)], 20) in [(s, s + 20) for s in range(90, 101)]
    with pytest.raises(InputError, match="unknown property"):
        text_property("in-brackets", text)


def test_find_units_ranks_by_the_correlation_of_all_activations(models):
    model = models[("lstm", 2)]
    scorer = Scorer(model)
    kept, ids, _ = encode_for_scoring(TEXT, VOCAB)
    search = find_units(scorer, kept, ids, "in-quotes", count=5)
    prop = text_property("in-quotes", TEXT)
    _, h, c, _ = reference_of(model)
    r = {}
    for layer in range(2):
        for kind, acts in (("h", h), ("c", c)):
            for unit in range(12):
                r[(layer, kind, unit)] = np.corrcoef(acts[:, layer, unit], prop)[0, 1]
    best = sorted(r, key=lambda key: -abs(r[key]))[:5]
    assert [(m.layer, m.kind, m.unit) for m in search.matches] == best
    for m in search.matches:
        assert abs(m.r - r[(m.layer, m.kind, m.unit)]) < 1e-3
        w0, w1 = search.window
        acts = (h if m.kind == "h" else c)[w0:w1, m.layer, m.unit]
        np.testing.assert_allclose(m.preview, acts, atol=5e-4)
    with pytest.raises(InputError, match="in-parens is the same all through this text"):
        find_units(scorer, "The king", encode_for_scoring("The king", VOCAB)[1], "in-parens")


# ----------------------------------------------------------------------------------------------
# The command line, in a subprocess


def run(*args, stdin: str | None = None, encoding="utf-8"):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "charrnn", "score", *map(str, args)],
        input=None if stdin is None else stdin.encode(encoding),
        capture_output=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cli_model(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("score-cli")
    make_model(root / "m", "lstm", 2)
    text = root / "text.txt"
    text.write_text(TEXT[:300] + "\tend\\")
    return root / "m", text


def test_cli_rows_match_the_library_and_eval(cli_model):
    directory, text = cli_model
    done = run(directory, text, "--top", "2", "--activations", "1:0,3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].split("\t") == ["pos", "char", "bits", "guess1", "p1", "guess2", "p2", "h0", "h3", "c0", "c3"]
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == len(TEXT[:300] + "\tend\\") and all(len(r) == 11 for r in rows)
    assert rows[0][2] == "" and rows[TEXT.index("\n")][1] == "\\n" and rows[300][1] == "\\t" and rows[-1][1] == "\\\\"
    bits = np.array([float(r[2]) for r in rows[1:]])
    model = load_model(directory)
    assert abs(bits.mean() - evaluate_file(model, text).bpc) < 1e-4
    library = score_text(model, text.read_text(), layer=1, units=[0, 3])
    np.testing.assert_allclose([float(r[8]) for r in rows], library.h[:, 1], atol=1e-4)

    jsonl = run(directory, "-", "--format", "jsonl", "--top", "1", stdin="To the king")
    assert jsonl.returncode == 0, jsonl.stderr
    objects = [json.loads(line) for line in jsonl.stdout.decode().splitlines()]
    assert [o["char"] for o in objects] == list("To the king")
    assert objects[0]["bits"] is None and objects[0]["top"] == []
    assert len(objects[1]["top"]) == 1 and set(objects[1]) == {"pos", "char", "bits", "top"}


def test_cli_summary_and_find_units(cli_model):
    directory, text = cli_model
    done = run(directory, text, "--summary")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    bpc = evaluate_file(load_model(directory), text).bpc
    assert out.startswith(f"{bpc:.4f} bits per character over 304 characters")
    assert "per line:" in out and "most surprising characters:" in out
    summary = json.loads(run(directory, text, "--summary", "--format", "jsonl").stdout)
    assert len(summary["lines"]) == (TEXT[:300] + "\tend\\").count("\n") + 1
    assert len(summary["most_surprising"]) == 10
    assert summary["most_surprising"][0]["bits"] == max(s["bits"] for s in summary["most_surprising"])
    found = run(directory, text, "--find-units", "in-parens", "--count", "3")
    assert found.returncode == 0, found.stderr
    listing = found.stdout.decode().splitlines()
    assert listing[0].startswith("units that track in-parens")
    assert [line.split()[0] for line in listing[3:6]] == ["1.", "2.", "3."]


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        (["nowhere.txt"], None, "nowhere.txt: no such file"),
        (["-", "--activations", "2"], "The king", "--activations: layer 2 is not a layer of this model"),
        (["-", "--activations", "x:1"], "The king", "--activations: 'x' is not a layer number"),
        (["-", "--activations", "1:3-99"], "The king", "--activations: units: 12 is not a unit"),
        (["-"], "The king€", "standard input: 1 characters are not in the model's vocabulary: '€'"),
        (["-"], "", "standard input is empty"),
        (["-", "--top", "-1"], "The king", "--top must be 0 or more"),
        (["-", "--find-units", "in-quotes"], "The king", "in-quotes is the same all through"),
        (["-", "--find-units", "in-quotes", "--summary"], "The king", "leave out --summary"),
        (["-", "--encoding", "nope"], "The king", "unknown encoding 'nope'"),
    ],
)
def test_cli_errors_are_one_line(cli_model, args, stdin, message):
    directory, _ = cli_model
    done = run(directory, *args, stdin=stdin)
    err = done.stderr.decode()
    assert done.returncode != 0
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_skip_drops_unknown_characters_with_a_warning(cli_model):
    directory, _ = cli_model
    done = run(directory, "-", "--unknown", "skip", stdin="The€ king")
    assert done.returncode == 0
    assert "skipped 1 characters not in the model's vocabulary: '€'" in done.stderr.decode()
    assert len(done.stdout.decode().splitlines()) == 1 + len("The king")
