"""`charrnn serve` left running for other people: a request's failure stays with it, hostile
strings and numbers are 4xx naming the field, and one client cannot take every stream."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve_engine import collect
from test_serve_support import live_server, make_tiny_models, wait_until

from charrnn.serve.checks import ApiError, Limits, check_generate
from charrnn.serve.engine import Engine
from charrnn.serve.jobs import GenerationFailed, make_job

POISON_TOP_P = 0.123456  # the flaky sampler below fails on any batch holding a row with this top_p


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("hostile-models"))


@pytest.fixture(scope="module")
def served(tiny_dirs):
    from charrnn.serve.models import load_served

    return {name: load_served(name, directory) for name, directory in tiny_dirs.items()}


class FailsOnPoison:
    """A sampler that fails, as a bug would, on every draw whose batch holds a poisoned row."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.vocab, self.spec = sampler.vocab, sampler.spec

    def new_states(self, n):
        return self.sampler.new_states(n)

    def read(self, states, row, ids):
        self.sampler.read(states, row, ids)

    def decode(self, ids):
        return self.sampler.decode(ids)

    def draw(self, states, uniforms, inv_t, top_k, top_p, greedy, out):
        if np.any(top_p == POISON_TOP_P):
            raise RuntimeError("boom: a poisoned row")
        self.sampler.draw(states, uniforms, inv_t, top_k, top_p, greedy, out)


def test_a_job_that_breaks_the_engine_ends_alone_and_the_others_get_their_text(served):
    sampler = served["tiny-lstm"].sampler
    engine = Engine({"m": FailsOnPoison(sampler)}, tick_chars=5)
    alone = Engine({"m": sampler}, tick_chars=5)
    try:
        jobs = []
        for i in range(8):
            q = queue.Queue()
            top_p = POISON_TOP_P if i == 3 else 0.9
            engine.submit("m", make_job(sampler.vocab.encode("R"), 60, 2, seed=i, top_p=top_p, sink=q.put))
            jobs.append((q, i, top_p))
        for q, i, top_p in jobs:
            got = collect(q, 2)
            if top_p == POISON_TOP_P:
                assert isinstance(got, GenerationFailed)
                assert "boom" not in str(got) and "server's log" in str(got)  # generic to clients
                continue
            q2 = queue.Queue()
            alone.submit("m", make_job(sampler.vocab.encode("R"), 60, 2, seed=i, top_p=0.9, sink=q2.put))
            assert got == collect(q2, 2), i
        assert wait_until(lambda: engine.streams == 0)
    finally:
        engine.close()
        alone.close()


def test_a_failure_is_logged_with_its_detail(served, caplog):
    sampler = served["tiny-rnn"].sampler
    engine = Engine({"m": FailsOnPoison(sampler)}, tick_chars=5)
    try:
        q = queue.Queue()
        with caplog.at_level("ERROR", logger="charrnn.serve"):
            engine.submit("m", make_job(np.zeros(0, dtype=np.int64), 10, 1, seed=1, top_p=POISON_TOP_P, sink=q.put))
            assert isinstance(collect(q, 1), GenerationFailed)
        assert "boom: a poisoned row" in caplog.text
    finally:
        engine.close()


# ------------------------------------------------------------------------------------------------
# check_generate: whatever a client sends is a GenerateRequest the engine can run, or a 4xx.

JSON_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "tiny-rnn", "R\udfff", 10**400, 2**63, 2**64, -1, 0, 1e-320])
)
FIELD_VALUES = {
    "model": st.sampled_from(["tiny-rnn", "tiny-gru", "\ud800", "nope"]) | JSON_SCALAR,
    "prime": st.text(max_size=20) | JSON_SCALAR,
    "length": JSON_SCALAR,
    "temperature": JSON_SCALAR,
    "top_k": JSON_SCALAR,
    "top_p": JSON_SCALAR,
    "seed": JSON_SCALAR,
    "num": JSON_SCALAR,
    "unknown": st.sampled_from(["error", "skip"]) | JSON_SCALAR,
    "stream": JSON_SCALAR,
}
REQUESTS = st.fixed_dictionaries(
    {"model": FIELD_VALUES["model"]}, optional={k: v for k, v in FIELD_VALUES.items() if k != "model"}
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=REQUESTS | st.dictionaries(st.text(max_size=5) | st.just("\ud800"), JSON_SCALAR, max_size=3))
def test_any_request_is_checked_into_a_runnable_job_or_a_4xx(served, data):
    limits = Limits(max_length=50, max_num=3)
    try:
        request = check_generate(data, served, limits)
    except ApiError as error:
        assert 400 <= error.status < 500
        json.dumps({"error": error.message}, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return
    job = make_job(
        request.model.vocab.encode(request.prime),
        request.length,
        request.num,
        temperature=request.temperature,
        top_k=request.top_k,
        top_p=request.top_p,
        seed=request.seed,
        sink=lambda item: None,
    )
    for dtype, value in ((np.float64, job.inv_temperature), (np.int64, job.top_k), (np.float64, job.top_p)):
        row = np.zeros(1, dtype=dtype)
        row[0] = value  # what ModelWorker._admit does with it
        assert np.isfinite(row[0])
    np.random.PCG64(job.seed)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"model": "\ud800"}, "model is not text"),
        ({"model": "tiny-rnn", "prime": "R\udfff"}, "prime is not text"),
        ({"model": "tiny-rnn", "\ud800": 1}, "a field's name is not text"),
        ({"model": "tiny-rnn", "temperature": 10**400}, "temperature must be a number above 0"),
    ],
)
def test_strings_and_numbers_that_used_to_be_500s_are_400s_naming_the_field(served, body, words):
    with pytest.raises(ApiError) as info:
        check_generate(body, served, Limits())
    assert info.value.status == 400 and words in info.value.message


def test_a_top_k_past_int64_is_top_k_off(served):
    request = check_generate({"model": "tiny-rnn", "top_k": 2**70}, served, Limits())
    assert request.top_k == len(served["tiny-rnn"].vocab)


# ------------------------------------------------------------------------------------------------
# A real server


def _raw_post(live, body: bytes, headers: dict | None = None, timeout: float = 30):
    conn = live.connection(timeout)
    conn.request("POST", "/api/generate", body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response.status, response, response.read().decode("utf-8")


def test_lone_surrogates_and_a_nan_bpc_never_make_a_500(tiny_dirs, tmp_path):
    odd = tmp_path / "nan-bpc"
    shutil.copytree(tiny_dirs["tiny-rnn"], odd)
    meta = json.loads((odd / "meta.json").read_text())
    meta["best_val_bpc"] = float("nan")
    (odd / "meta.json").write_text(json.dumps(meta))  # NaN: Python's JSON reads it
    with live_server({"nan-bpc": odd, **tiny_dirs}, bundled=False) as live:
        status, _, data = live.request("GET", "/api/models")
        assert status == 200 and data["models"][0] == {
            "name": "nan-bpc",
            "cell": "rnn",
            "layers": 1,
            "hidden": 32,
            "vocab_size": len(meta["vocab"]),
            "best_val_bpc": None,
        }
        for body, field in ((b'{"model": "\\ud800"}', "model"), (b'{"model": "nan-bpc", "prime": "\\udc80"}', "prime")):
            status, _, text = _raw_post(live, body)
            assert status == 400 and json.loads(text)["error"].startswith(f"{field} is not text"), text
        assert (
            live.generate(model="nan-bpc", length=5, top_k=2**70, seed=1)["texts"]
            == live.generate(model="nan-bpc", length=5, top_k=0, seed=1)["texts"]
        )


def test_one_client_holds_only_its_share_and_a_full_server_says_when_to_retry(tiny_dirs):
    with live_server(tiny_dirs, bundled=False, max_streams=8, max_num=2, max_per_client=3, max_length=10**7) as live:
        conn = live.connection()
        conn.request(
            "POST",
            "/api/generate",
            json.dumps({"model": "tiny-rnn", "length": 10**7, "num": 2, "stream": True}),
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200 and response.read1(100)
        status, headers, text = _raw_post(live, json.dumps({"model": "tiny-gru", "length": 5, "num": 2}).encode())
        assert status == 429 and headers.getheader("Retry-After") == "1"
        assert "each client's share is 3" in json.loads(text)["error"]
        assert live.generate(model="tiny-gru", length=5, num=1)["texts"]  # within its share
        conn.close()
        assert wait_until(lambda: live.engine.streams == 0)
        assert live.generate(model="tiny-gru", length=5, num=2)["texts"]


def test_a_body_that_never_arrives_is_408(tiny_dirs):
    with live_server(tiny_dirs, bundled=False, body_seconds=0.5) as live:
        sock = socket.create_connection(("127.0.0.1", live.port), timeout=30)
        sock.sendall(
            b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model"'
        )
        answer = b""
        while b"took longer" not in answer:  # the head and the body may come apart
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        sock.close()
        answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408") and "took longer than 0.5 seconds" in answer
        assert live.request("GET", "/api/models")[0] == 200


def test_headers_that_never_end_close_the_connection(tiny_dirs):
    from charrnn.serve.protocol import protocol_with_header_deadline

    with live_server(tiny_dirs, bundled=False, uvicorn_options={"http": protocol_with_header_deadline(0.5)}) as live:
        sock = socket.create_connection(("127.0.0.1", live.port), timeout=30)
        sock.sendall(b"GET /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
        assert sock.recv(4096) == b""  # closed by the server (our own timeout would raise)
        sock.close()
        assert live.request("GET", "/api/models")[0] == 200  # others unaffected


def test_a_model_directory_whose_name_is_not_text_is_refused_at_start(tmp_path):
    from charrnn.errors import InputError
    from charrnn.serve.models import model_directories

    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")  # a Latin-1 name on a UTF-8 system
    with pytest.raises(InputError, match="must be UTF-8 text"):
        model_directories([odd])
