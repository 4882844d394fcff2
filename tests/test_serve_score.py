"""POST /api/score against a real server on a loopback port: the library's numbers, and a 4xx
naming the field for every kind of bad input (never a 500)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from test_serve_support import TINY_TEXT, live_server, make_tiny_models

LIMITS = dict(max_text=500, max_body=4096)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("score-models"))


@pytest.fixture(scope="module")
def live(tiny_dirs):
    with live_server(tiny_dirs, bundled=False, **LIMITS) as server:
        yield server


def score(live, **body):
    status, _, data = live.request("POST", "/api/score", body)
    assert status == 200, data
    return data


@pytest.mark.parametrize("name", ["tiny-rnn", "tiny-lstm", "tiny-gru"])
def test_score_gives_the_librarys_numbers(live, tiny_dirs, name):
    from charrnn.analysis import score_text
    from charrnn.sampling import load

    model = load(tiny_dirs[name])
    text = TINY_TEXT * 3
    data = score(live, model=name, text=text, top=3, layer=0, units=[1, 4])
    expected = score_text(model, text, top=3, layer=0, units=[1, 4])
    assert data["model"] == name and data["text"] == text and data["skipped"] == {}
    assert data["chars"] == len(text) - 1 and abs(data["bpc"] - expected.bpc) < 1e-5
    assert len(data["bits"]) == len(text) and data["bits"][0] is None
    np.testing.assert_allclose(data["bits"][1:], expected.bits[1:], atol=1e-4)
    assert data["top"][0] == []
    for t in (1, 17, len(text) - 1):
        assert [g for g, _ in data["top"][t]] == [model.vocab.chars[i] for i in expected.top_ids[t]]
        np.testing.assert_allclose([p for _, p in data["top"][t]], expected.top_probs[t], atol=1e-4)
    acts = data["activations"]
    assert acts["layer"] == 0 and acts["units"] == [1, 4]
    np.testing.assert_allclose(acts["h"], expected.h.T, atol=1e-4)
    assert ("c" in acts) == (name == "tiny-lstm")
    if name == "tiny-lstm":
        np.testing.assert_allclose(acts["c"], expected.c.T, atol=1e-4)


def test_packed_activations_are_every_unit_as_int8(live, tiny_dirs):
    from charrnn.analysis import score_text
    from charrnn.sampling import load

    text = TINY_TEXT
    data = score(live, model="tiny-lstm", text=text, top=0, layer=1, packed=True)
    acts = data["activations"]
    assert acts["units"] == list(range(24)) and acts["scale"] == 127 and "c" not in acts
    values = np.frombuffer(base64.b64decode(acts["h"]), dtype=np.int8).reshape(24, len(text))
    expected = score_text(load(tiny_dirs["tiny-lstm"]), text, layer=1).h.T
    np.testing.assert_allclose(values / 127.0, expected, atol=0.5 / 127 + 1e-4)
    assert data["top"][1] == []


def test_unknown_characters_are_refused_or_left_out(live):
    status, _, data = live.request("POST", "/api/score", {"model": "tiny-rnn", "text": "The king€ ✓"})
    assert status == 400
    assert data["error"].startswith(
        "text: 2 characters are not in the model's vocabulary: '€' '✓'; remove them, or send \"unknown\": \"skip\""
    )
    data = score(live, model="tiny-rnn", text="The king€ ✓", unknown="skip")
    assert data["text"] == "The king " and data["skipped"] == {"€": 1, "✓": 1}


@pytest.mark.parametrize(
    "body,status,message",
    [
        ({"text": "The"}, 400, "the field 'model' is required"),
        ({"model": "nope", "text": "The"}, 404, 'no model named "nope"'),
        ({"model": "tiny-rnn"}, 400, "the field 'text' is required"),
        ({"model": "tiny-rnn", "text": 5}, 400, "text must be a string"),
        ({"model": "tiny-rnn", "text": "T" * 501}, 400, "text has 501 characters, over this server's limit of 500"),
        ({"model": "tiny-rnn", "text": "T"}, 400, "text: fewer than 2 characters"),
        ({"model": "tiny-rnn", "text": "The", "top": -1}, 400, "top must be a whole number"),
        ({"model": "tiny-rnn", "text": "The", "top": 1.5}, 400, "top must be a whole number"),
        ({"model": "tiny-rnn", "text": "The", "top": 10**6}, 400, "top must be a whole number"),
        ({"model": "tiny-rnn", "text": "The", "unknown": "drop"}, 400, "unknown must be"),
        ({"model": "tiny-rnn", "text": "The", "layer": 1}, 400, "layer must be null or a whole number from 0 to 0"),
        ({"model": "tiny-rnn", "text": "The", "layer": "0"}, 400, "layer must be"),
        ({"model": "tiny-rnn", "text": "The", "units": [1]}, 400, "units needs a layer"),
        ({"model": "tiny-rnn", "text": "The", "layer": 0, "units": [32]}, 400, "units: 32 is not a unit of this model"),
        ({"model": "tiny-rnn", "text": "The", "layer": 0, "units": "3-1"}, 400, "units: the range"),
        ({"model": "tiny-rnn", "text": "The", "layer": 0, "units": {"a": 1}}, 400, "units must be"),
        ({"model": "tiny-rnn", "text": "The", "layer": 0, "units": ["1"]}, 400, "units must be whole numbers"),
        ({"model": "tiny-rnn", "text": "The", "layer": 0, "packed": 1}, 400, "packed must be"),
        ({"model": "tiny-rnn", "text": "The", "colour": 1}, 400, "unknown field 'colour'"),
        ({"model": ["tiny-rnn"], "text": "The"}, 400, "model must be a model's name"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(live, body, status, message):
    got, _, data = live.request("POST", "/api/score", body)
    assert got == status, data
    assert message in data["error"], data


def test_bad_bodies_get_a_4xx(live):
    for raw, headers, status, message in [
        (b"{", None, 400, "not valid JSON"),
        (b"[1]", None, 400, "must be a JSON object"),
        (b"\xff", None, 400, "not UTF-8"),
        (b'{"model": "tiny-rnn", "text": "' + b"T" * 5000 + b'"}', None, 413, "over this server's limit"),
        (b'{"model": "tiny-rnn", "text": "The"}', {"Content-Type": "text/plain"}, 415, "JSON"),
    ]:
        got, _, data = live.request("POST", "/api/score", raw=raw, headers=headers)
        assert got == status and message in data["error"], (raw[:20], data)
    got, _, data = live.request("GET", "/api/score")
    assert got == 405


def test_too_many_float_values_are_refused(live, monkeypatch):
    import charrnn.serve.score as score_module

    monkeypatch.setattr(score_module, "MAX_FLOAT_VALUES", 100)
    got, _, data = live.request("POST", "/api/score", {"model": "tiny-rnn", "text": TINY_TEXT, "layer": 0})
    assert got == 400 and "units: 32 units x" in data["error"] and "packed" in data["error"]
    assert score(live, model="tiny-rnn", text=TINY_TEXT, layer=0, packed=True)["activations"]
