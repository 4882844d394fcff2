"""What the `charrnn serve` tests share: tiny models of every cell, a real server on a loopback
port (uvicorn in a thread, so tests can look at its engine), and a small HTTP client.
(No tests here.)"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parent.parent
TINY_TEXT = "ROMEO:\nThe king shall speak of love and war to thee, my lord.\nJULIET: O!\n"
TINY_MODELS = {"tiny-rnn": ("rnn", 1, 32), "tiny-lstm": ("lstm", 2, 24), "tiny-gru": ("gru", 2, 16)}


def make_tiny_models(root: Path) -> dict[str, Path]:
    """Model directories (format 2) with random weights: an RNN, a 2-layer LSTM, a 2-layer GRU."""
    from charrnn.model.checkpoint import save_model
    from charrnn.model.params import init_params
    from charrnn.model.spec import ModelSpec
    from charrnn.model.vocab import Vocab

    vocab = Vocab(tuple(sorted(set(TINY_TEXT))))
    found = {}
    for seed, (name, (cell, layers, hidden)) in enumerate(TINY_MODELS.items()):
        spec = ModelSpec(cell, layers, hidden, len(vocab))
        params = init_params(spec, np.random.default_rng(seed), input_scale=1.0)
        directory = root / name
        save_model(directory, params, vocab, {"best_val_bpc": 3.25 + seed, "step": 1})
        found[name] = directory
    return found


class Live:
    """A server running in this process, on 127.0.0.1:port."""

    def __init__(self, app, port: int, server, thread):
        self.app, self.port, self.server, self.thread = app, port, server, thread

    @property
    def engine(self):
        return self.app.state.engine

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self, timeout: float = 60) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self, method: str, path: str, body=None, *, headers=None, raw: bytes | None = None, timeout: float = 60
    ):
        """(status, headers, parsed JSON or text) of one request."""
        conn = self.connection(timeout)
        try:
            sent = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            all_headers = {"Content-Type": "application/json"} if sent is not None else {}
            all_headers.update(headers or {})
            conn.request(method, path, body=sent, headers=all_headers)
            response = conn.getresponse()
            data = response.read().decode("utf-8")
            kind = response.getheader("content-type", "")
            parsed = json.loads(data) if kind.startswith("application/json") else data
            return response.status, response, parsed
        finally:
            conn.close()

    def generate(self, **body):
        status, _, data = self.request("POST", "/api/generate", body)
        assert status == 200, data
        return data

    def stream(self, **body):
        """The events of a streaming request: [(type, data), ...]."""
        status, response, text = self.request("POST", "/api/generate", {**body, "stream": True})
        assert status == 200, text
        assert response.getheader("content-type").startswith("text/event-stream")
        return parse_events(text)


def parse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        kind, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        events.append((kind, json.loads("\n".join(data))))
    return events


def texts_of(events, num: int) -> list[str]:
    texts = [""] * num
    for kind, data in events:
        if kind == "message":
            texts[data["index"]] += data["text"]
    return texts


@contextmanager
def live_server(
    model_dirs: dict[str, Path] | None = None, *, bundled: bool = True, uvicorn_options: dict | None = None, **limits
):
    """A real server (uvicorn, in a thread) on a free loopback port."""
    import uvicorn

    from charrnn.resources import bundled_model_dir
    from charrnn.serve.app import LOOPBACK_HOSTS, create_app
    from charrnn.serve.checks import Limits
    from charrnn.serve.models import load_served

    found = dict(model_dirs or {})
    if bundled:
        found = {"shakespeare": bundled_model_dir("shakespeare"), **found}
    served = [load_served(name, directory) for name, directory in found.items()]
    app = create_app(served, Limits(**limits), allowed_hosts=LOOPBACK_HOSTS)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            **(uvicorn_options or {}),
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield Live(app, port, server, thread)
    finally:
        app.state.engine.close()
        server.should_exit = True
        thread.join(15)
        sock.close()


def wait_until(predicate, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
