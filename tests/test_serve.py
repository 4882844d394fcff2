"""`charrnn serve`'s JSON API, against a real server on a loopback port."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from test_serve_support import ROOT, TINY_MODELS, live_server, make_tiny_models, texts_of, wait_until

LIMITS = dict(
    max_length=3000, max_num=4, max_prime=300, max_body=4096, max_streams=40, max_per_client=40
)  # every test request comes from 127.0.0.1


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("serve-models"))


@pytest.fixture(scope="module")
def live(tiny_dirs):
    with live_server(tiny_dirs, **LIMITS) as server:
        yield server


def library_sample(directory, length, **options):
    from charrnn.sampling import sample

    return sample(str(directory), length, **options)


# ----------------------------------------------------------------------------------------------
# Models


def test_models_lists_every_model_with_its_shape(live):
    status, response, data = live.request("GET", "/api/models")
    assert status == 200 and response.getheader("content-type") == "application/json"
    by_name = {m["name"]: m for m in data["models"]}
    assert list(by_name) == ["shakespeare", *TINY_MODELS]
    for entry in data["models"]:
        assert set(entry) == {"name", "cell", "layers", "hidden", "vocab_size", "best_val_bpc"}
    # The bundled model's meta.json is format 1: no cell, no layers.
    assert by_name["shakespeare"]["cell"] == "rnn" and by_name["shakespeare"]["layers"] == 1
    assert by_name["shakespeare"]["hidden"] == 1024 and by_name["shakespeare"]["vocab_size"] == 65
    assert abs(by_name["shakespeare"]["best_val_bpc"] - 2.2827) < 1e-3
    assert by_name["tiny-lstm"] == {
        "name": "tiny-lstm",
        "cell": "lstm",
        "layers": 2,
        "hidden": 24,
        "vocab_size": by_name["tiny-rnn"]["vocab_size"],
        "best_val_bpc": 4.25,
    }
    assert by_name["tiny-gru"]["cell"] == "gru"


# ----------------------------------------------------------------------------------------------
# Generation: the same text as the library and the command line


@pytest.mark.parametrize("name", ["shakespeare", *TINY_MODELS])
def test_generate_gives_the_librarys_text_for_every_cell(live, tiny_dirs, name):
    directory = tiny_dirs.get(name, "shakespeare")
    options = dict(prime="ROMEO:", temperature=0.7, top_k=10, top_p=0.9, seed=12)
    data = live.generate(model=name, length=200, **options)
    assert data == {"model": name, "seed": 12, "texts": ["ROMEO:" + library_sample(directory, 200, **options)]}


def test_generate_gives_what_charrnn_sample_prints(live, tiny_dirs):
    for name, args, body in [
        ("shakespeare", ["shakespeare"], dict(prime="JULIET:", length=300, seed=5)),
        (
            "tiny-lstm",
            [str(tiny_dirs["tiny-lstm"])],
            dict(prime="The ", length=150, temperature=1.3, top_k=6, top_p=0.8, seed=77, num=3),
        ),
    ]:
        flags = ["--prime", body["prime"], "--length", str(body["length"]), "--seed", str(body["seed"])]
        for key, flag in (
            ("temperature", "--temperature"),
            ("top_k", "--top-k"),
            ("top_p", "--top-p"),
            ("num", "--num"),
        ):
            if key in body:
                flags += [flag, str(body[key])]
        printed = subprocess.run(
            [sys.executable, "-m", "charrnn", "sample", *args, *flags],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert printed.returncode == 0, printed.stderr
        texts = live.generate(model=name, **body)["texts"]
        # charrnn sample prints each sample (prime first) and a newline, a blank line between.
        assert printed.stdout == "\n\n".join(texts) + "\n"


def test_defaults_are_charrnn_samples(live, tiny_dirs):
    data = live.generate(model="tiny-rnn", seed=3)
    assert data["texts"] == [library_sample(tiny_dirs["tiny-rnn"], 500, temperature=0.8, seed=3)]


def test_without_a_seed_the_answer_says_which_seed_repeats_it(live):
    first = live.generate(model="tiny-gru", prime="O", length=80)
    assert isinstance(first["seed"], int) and first["seed"] >= 0
    again = live.generate(model="tiny-gru", prime="O", length=80, seed=first["seed"])
    assert again == first


def test_several_samples_and_an_empty_length(live):
    data = live.generate(model="tiny-rnn", prime="ROMEO:", length=0, num=3, seed=1)
    assert data["texts"] == ["ROMEO:"] * 3
    data = live.generate(model="tiny-rnn", length=60, num=4, seed=1)
    assert len(data["texts"]) == 4 and len(set(data["texts"])) == 4
    assert all(len(text) == 60 for text in data["texts"])


def test_unknown_skip_drops_characters_outside_the_vocabulary(live):
    data = live.generate(model="tiny-rnn", prime="RO€MEO:✓", unknown="skip", length=50, seed=2)
    assert data["texts"] == [live.generate(model="tiny-rnn", prime="ROMEO:", length=50, seed=2)["texts"][0]]
    assert data["texts"][0].startswith("ROMEO:")


# ----------------------------------------------------------------------------------------------
# Streaming


def test_streaming_sends_the_prime_then_pieces_then_an_end_event(live):
    events = live.stream(model="shakespeare", prime="ROMEO:", length=1500, seed=9, num=2)
    assert events[-1] == ("end", {"model": "shakespeare", "seed": 9})
    body = events[:-1]
    assert all(kind == "message" and set(data) == {"index", "text"} for kind, data in body)
    assert {data["index"] for _, data in body} == {0, 1}
    assert [data for _, data in body[:2]] == [{"index": 0, "text": "ROMEO:"}, {"index": 1, "text": "ROMEO:"}]
    assert len(body) > 4  # the text came in pieces, not all at once
    whole = live.generate(model="shakespeare", prime="ROMEO:", length=1500, seed=9, num=2)
    assert texts_of(events, 2) == whole["texts"]


def test_a_streamed_error_free_empty_generation_still_ends(live):
    assert live.stream(model="tiny-rnn", length=0, seed=4) == [("end", {"model": "tiny-rnn", "seed": 4})]


def test_concurrent_requests_get_exactly_their_text_alone(live):
    bodies = [
        dict(model=name, prime=prime, length=length, temperature=t, top_k=k, top_p=p, seed=seed, num=num)
        for seed, (name, prime, length, t, k, p, num) in enumerate(
            [
                ("shakespeare", "ROMEO:", 900, 0.8, 0, 1.0, 1),
                ("shakespeare", "", 400, 1.2, 5, 1.0, 2),
                ("shakespeare", "KING", 1200, 0.5, 0, 0.7, 1),
                ("tiny-lstm", "The", 700, 1.0, 0, 1.0, 3),
                ("tiny-lstm", "", 300, 0.9, 3, 0.95, 1),
                ("tiny-gru", "O", 500, 1.0, 0, 1.0, 2),
                ("shakespeare", "JULIET:", 50, 1.0, 0, 1.0, 1),
                ("tiny-rnn", "ROMEO", 800, 0.6, 8, 1.0, 1),
            ]
        )
    ]
    results = [None] * len(bodies)

    def run(i):
        results[i] = (live.stream if i % 2 else live.generate)(**bodies[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for i, body in enumerate(bodies):
        texts = texts_of(results[i], body["num"]) if i % 2 else results[i]["texts"]
        assert texts == live.generate(**body)["texts"], body


# ----------------------------------------------------------------------------------------------
# Errors: JSON {"error": ...} with a 4xx, and the server carries on


def _post(live, body=None, *, raw=None, headers=None):
    return live.request("POST", "/api/generate", body, raw=raw, headers=headers)


ERRORS = [
    # (body, status, words the message must hold)
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b"[1, 2]", 400, "JSON object"),
    ({}, 400, "'model' is required"),
    ({"model": 3}, 400, "model must be"),
    ({"model": "nope"}, 404, 'no model named "nope"'),
    ({"model": "../../etc/passwd"}, 404, "no model named"),
    ({"model": "tiny-rnn", "greedy": True}, 400, "unknown field 'greedy'"),
    ({"model": "tiny-rnn", "prime": 5}, 400, "prime must be a string"),
    ({"model": "tiny-rnn", "length": -1}, 400, "length must be a whole number"),
    ({"model": "tiny-rnn", "length": 2.5}, 400, "length must be a whole number"),
    ({"model": "tiny-rnn", "length": True}, 400, "length must be a whole number"),
    ({"model": "tiny-rnn", "length": 3001}, 400, "over this server's limit of 3000"),
    ({"model": "tiny-rnn", "temperature": 0}, 400, "temperature must be a number above 0"),
    ({"model": "tiny-rnn", "temperature": -1}, 400, "temperature must be a number above 0"),
    ({"model": "tiny-rnn", "temperature": "hot"}, 400, "temperature must be a number above 0"),
    ({"model": "tiny-rnn", "temperature": 1e-320}, 400, "too small"),
    ({"model": "tiny-rnn", "top_k": -1}, 400, "top_k must be"),
    ({"model": "tiny-rnn", "top_k": 1.5}, 400, "top_k must be"),
    ({"model": "tiny-rnn", "top_p": 0}, 400, "top_p must be a number in (0, 1]"),
    ({"model": "tiny-rnn", "top_p": 1.5}, 400, "top_p must be a number in (0, 1]"),
    ({"model": "tiny-rnn", "seed": -1}, 400, "seed must be a whole number"),
    ({"model": "tiny-rnn", "seed": "x"}, 400, "seed must be a whole number"),
    ({"model": "tiny-rnn", "seed": 2**64}, 400, "seed must be a whole number"),
    ({"model": "tiny-rnn", "num": 0}, 400, "num must be a whole number"),
    ({"model": "tiny-rnn", "num": 5}, 400, "num 5 is over this server's limit of 4"),
    ({"model": "tiny-rnn", "unknown": "maybe"}, 400, 'unknown must be "error" or "skip"'),
    ({"model": "tiny-rnn", "stream": "yes"}, 400, "stream must be true or false"),
    ({"model": "tiny-rnn", "prime": "ROMEO€ ✓€"}, 400, "not in the model's vocabulary: '€' '✓'"),
    ({"model": "tiny-rnn", "prime": "O" * 301}, 400, "limit of 300"),
    (b'{"model": "tiny-rnn", "prime": "' + b"O" * 5000 + b'"}', 413, "limit of 4096"),
    (b"1" * 100 + b"[" * 3000, 400, "not valid JSON"),
]


@pytest.mark.parametrize("body,status,words", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_a_bad_request_gets_a_json_error(live, body, status, words):
    raw = body if isinstance(body, bytes) else None
    got, response, data = _post(live, None if raw else body, raw=raw)
    assert got == status, data
    assert response.getheader("content-type") == "application/json"
    assert set(data) == {"error"} and words in data["error"], data


def test_an_unknown_character_error_lists_them_and_names_the_way_out(live):
    _, _, data = _post(live, {"model": "tiny-rnn", "prime": "a€e✓"})
    assert "'€' '✓'" in data["error"] and '"unknown": "skip"' in data["error"]


def test_wrong_content_type_method_path_and_host_are_json_errors(live):
    status, _, data = _post(live, raw=b'{"model": "tiny-rnn"}', headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in data["error"]
    status, _, data = live.request("GET", "/api/generate")
    assert status == 405 and "GET is not allowed" in data["error"]
    status, _, data = live.request("GET", "/api/nothing")
    assert status == 404 and "nothing at /api/nothing" in data["error"]
    # A page elsewhere that rebinds its own name to 127.0.0.1 is refused.
    status, _, data = live.request("GET", "/api/models", headers={"Host": "evil.example:8000"})
    assert status == 400 and "answers only to" in data["error"]
    for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
        assert live.request("GET", "/api/models", headers={"Host": host})[0] == 200
    # A declared body over the cap is refused before it is read.
    conn = live.connection()
    conn.putrequest("POST", "/api/generate")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", "10000000")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "limit of 4096" in json.loads(response.read())["error"]
    conn.close()
    assert live.request("GET", "/api/models")[0] == 200


def test_too_many_generations_at_once_is_429_and_the_slots_come_back(tiny_dirs):
    with live_server(tiny_dirs, bundled=False, max_streams=3, max_length=10**6) as live:
        conn = live.connection()
        conn.request(
            "POST",
            "/api/generate",
            json.dumps({"model": "tiny-rnn", "length": 10**6, "num": 3, "stream": True}),
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200 and response.read1(100)
        status, headers, data = _post(live, {"model": "tiny-gru", "length": 5})
        assert status == 429 and "limit is 3" in data["error"]
        assert headers.getheader("Retry-After") == "1"
        conn.close()  # the client goes away: slots come back
        assert wait_until(lambda: live.engine.streams == 0)
        assert live.generate(model="tiny-gru", length=5, num=3)["texts"]


def test_a_client_that_disconnects_stops_its_generation(tiny_dirs):
    with live_server({}, max_length=10**6) as live:
        for stream in (True, False):
            conn = live.connection()
            conn.request(
                "POST",
                "/api/generate",
                json.dumps({"model": "shakespeare", "length": 10**6, "stream": stream}),
                {"Content-Type": "application/json"},
            )
            if stream:
                response = conn.getresponse()
                assert response.status == 200
                assert b"data:" in response.read1(200)
            else:
                assert wait_until(lambda: live.engine.streams == 1)
                time.sleep(0.2)
            worker = live.engine.workers()["shakespeare"]
            conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
            assert wait_until(lambda worker=worker: live.engine.streams == 0 and worker.active_rows == 0, 30)
            drawn = worker.chars_drawn
            time.sleep(0.3)
            assert worker.chars_drawn == drawn  # nothing more is generated
            assert drawn < 10**6
        assert live.generate(model="shakespeare", length=10, seed=1)["texts"]


def test_the_page_and_its_assets_are_served_by_charrnn(live):
    status, response, html = live.request("GET", "/")
    assert status == 200 and response.getheader("content-type").startswith("text/html")
    assert "default-src 'self'" in response.getheader("content-security-policy")
    assets = re.findall(r'(?:src|href)="(/[^"]*)"', html)
    assert set(assets) == {"/static/app.css", "/static/app.js", "/static/analyse.js"}
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    for asset in assets:
        status, _, text = live.request("GET", asset)
        assert status == 200 and text
        assert "http://" not in text and "https://" not in text


def test_readme_curl_example_works(live):
    """The README's curl example, sent as it is written (its JSON and its headers)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [c for c in re.findall(r"^curl .*?(?<!\\)$", readme, re.M | re.S)]
    assert commands, "README.md has no curl example"
    for command in commands:
        path = re.search(r"http://127\.0\.0\.1:8000(/\S*)", command).group(1)
        found = re.search(r"-d '(\{.*?\})'", command, re.S)
        if found is None:
            status, _, data = live.request("GET", path)
            assert status == 200 and "models" in data
            continue
        body = found.group(1)
        assert path == "/api/generate" and "Content-Type: application/json" in command
        data = json.loads(body)
        if data.get("stream"):
            events = live.stream(**{k: v for k, v in data.items() if k != "stream"})
            assert events[-1][0] == "end"
        else:
            assert live.generate(**data)["texts"]


@pytest.mark.slow
def test_load_32_streams_at_once_all_answered(live):
    """32 clients streaming at once for a few seconds: every one gets its whole text, exact."""
    bodies = [
        dict(model="shakespeare" if i % 4 else "tiny-lstm", prime="ROMEO:", length=3000, seed=100 + i)
        for i in range(32)
    ]
    results = [None] * 32
    errors = []

    def run(i):
        try:
            results[i] = live.stream(**bodies[i])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append((i, error))

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    elapsed = time.monotonic() - started
    assert not errors, errors
    for i, events in enumerate(results):
        assert events[-1] == ("end", {"model": bodies[i]["model"], "seed": bodies[i]["seed"]})
        assert len(texts_of(events, 1)[0]) == len("ROMEO:") + 3000
    for i in (0, 1, 31):  # a few, checked against the same request alone
        assert texts_of(results[i], 1) == live.generate(**bodies[i])["texts"]
    assert wait_until(lambda: live.engine.streams == 0, 30)
    assert live.request("GET", "/api/models")[0] == 200
    print(f"32 streams x 3000 characters in {elapsed:.1f} s")
