"""`charrnn serve` as a user runs it: a real process, its messages, Ctrl-C."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from test_serve_support import ROOT, make_tiny_models, parse_events


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


class Process:
    """`python -m charrnn serve ARGS` with its stderr read on a thread."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "serve", *args],
            cwd=ROOT,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def url(self, timeout: float = 120) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"serving on http://(\S+):(\d+)/", self.stderr)
            if found:
                return found.group(1), int(found.group(2))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"no address printed:\n{self.stderr}")

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(5)
        return code


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("cli-models"))


def test_serves_until_ctrl_c_which_ends_running_streams_cleanly(tiny_dirs):
    server = Process(
        str(tiny_dirs["tiny-lstm"]), str(tiny_dirs["tiny-rnn"]), "--port", "0", "--max-length", "100000000"
    )
    host, port = server.url()
    assert host == "127.0.0.1"
    assert "tiny-lstm: lstm, 2 layers, 24 units" in server.stderr
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/api/models")
    names = [m["name"] for m in json.loads(conn.getresponse().read())["models"]]
    assert names == ["tiny-lstm", "tiny-rnn"]
    # A stream that would run for minutes, then Ctrl-C: it gets an error event and the end.
    conn.request(
        "POST",
        "/api/generate",
        json.dumps({"model": "tiny-lstm", "length": 10**8, "stream": True}),
        {"Content-Type": "application/json"},
    )
    response = conn.getresponse()
    first = response.read1(100)
    assert response.status == 200 and first.startswith(b"data:")
    code = server.stop()  # Ctrl-C; stop() kills the server if it has not ended in 30 s
    stream = (first + response.read()).decode()  # the server ended the stream
    assert code == 0, server.stderr
    # The whole stream, from its first byte (the first read may end anywhere, even between events);
    # however few characters a busy machine sent before Ctrl-C, its last event says why it stopped.
    events = parse_events(stream)
    assert events[-1] == ("error", {"error": "the server is shutting down"})
    assert all(kind == "message" for kind, _ in events[:-1])
    assert "Traceback" not in server.stderr and server.stderr.rstrip().endswith("stopped")


def test_another_host_than_loopback_is_warned_about(tiny_dirs):
    server = Process(str(tiny_dirs["tiny-rnn"]), "--host", "0.0.0.0", "--port", "0")
    _, port = server.url()
    assert "warning: listening on 0.0.0.0: anyone who can reach this machine" in server.stderr
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/models")
    assert conn.getresponse().status == 200
    assert server.stop() == 0 and "Traceback" not in server.stderr


def _run(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "charrnn", "serve", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_mistakes_are_one_line_errors(tiny_dirs, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = str(taken.getsockname()[1])
        twin = tmp_path / "a" / "tiny-rnn"
        twin.parent.mkdir()
        twin.symlink_to(tiny_dirs["tiny-rnn"])
        for args, words in [
            ((str(tiny_dirs["tiny-rnn"]), "--port", port), f"cannot listen on 127.0.0.1:{port}"),
            ((str(tmp_path / "missing"),), "no such model directory"),
            ((str(tiny_dirs["tiny-rnn"]), str(twin)), "would both be served as 'tiny-rnn'"),
            (("--port", "70000"), "--port must be from 0 to 65535"),
            (("--max-num", "0"), "--max-num must be 1 or more"),
        ]:
            ran = _run(*args)
            assert ran.returncode == 1, (args, ran.stderr)
            assert "Traceback" not in ran.stderr, ran.stderr
            errors = [line for line in ran.stderr.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1 and words in errors[0], (args, ran.stderr)
    finally:
        taken.close()


def test_without_the_extra_it_says_what_to_install():
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from charrnn.cli import main\n"
        "main(['serve'])\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", blocker], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert ran.returncode != 0
    assert ran.stderr.strip().splitlines() == [
        'Error: charrnn serve needs Starlette and uvicorn: pip install "charrnn[serve]"'
    ]
