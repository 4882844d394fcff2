"""charrnn download / charrnn corpora against a real HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import urllib3.exceptions
from click.testing import CliRunner

import charrnn.cli.download as cli_download
from charrnn import __version__
from charrnn.cli import main
from charrnn.corpus.download import (
    USER_AGENT,
    DownloadError,
    FetchPolicy,
    HostPacer,
    Source,
    corpus_paths,
    describe_request_error,
    download,
    gutenberg_url,
    load_catalog,
    local_corpora,
    resolve_source,
)
from charrnn.resources import catalog_path

TEXT = "".join(f"Line {n}: the quick brown fox jumps over the lazy dog.\n" for n in range(2000)).encode()
TEXT_SHA = hashlib.sha256(TEXT).hexdigest()

GUTENBERG_BOOK = "It was the best of times, it was the worst of times.\n" * 200
GUTENBERG_FILE = (
    "The Project Gutenberg eBook of A Tale of Two Cities\r\n\r\n"
    "Title: A Tale of Two Cities\r\n\r\nAuthor: Charles Dickens\r\n\r\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK A TALE OF TWO CITIES ***\r\n\r\n"
    "Produced by Judith Boss\r\n\r\n"
    + GUTENBERG_BOOK.replace("\n", "\r\n")
    + "\r\n*** END OF THE PROJECT GUTENBERG EBOOK A TALE OF TWO CITIES ***\r\n\r\n"
    + "The Full Project Gutenberg License\r\n"
)


# ---------------------------------------------------------------------------------------------
# A local HTTP server whose routes each test writes


@dataclass
class Seen:
    path: str
    headers: dict


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = self.server.routes.get(urlsplit(self.path).path)
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that time out and hang up are part of the tests


class LocalServer:
    def __init__(self):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.seen = []
        self.release = threading.Event()  # stalled handlers wait for this
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, handler) -> str:
        self.httpd.routes[path] = handler
        return self.url(path)

    def seen(self, path: str) -> list[Seen]:
        return [s for s in self.httpd.seen if urlsplit(s.path).path == path]

    def stall(self) -> None:
        self.release.wait(5)

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    local = LocalServer()
    yield local
    local.close()


def send(handler, body: bytes, status: int = 200, headers: dict | None = None, cut_at: int | None = None):
    """Answer with `body`; `cut_at` sends only that many bytes and hangs up (Content-Length is whole)."""
    handler.send_response(status)
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)), **(headers or {})}
    for key, value in headers.items():
        if value is not None:
            handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body if cut_at is None else body[:cut_at])
    handler.wfile.flush()


def serve_range(handler, body: bytes, headers: dict | None = None):
    """A 206 for a `Range: bytes=N-` request, else the whole body."""
    requested = handler.headers.get("Range")
    if requested is None:
        send(handler, body, headers=headers)
        return
    start = int(requested.removeprefix("bytes=").rstrip("-"))
    part = body[start:]
    send(
        handler,
        part,
        206,
        {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}", **(headers or {})},
    )


def range_start(header: str) -> int:
    assert header.startswith("bytes=") and header.endswith("-"), header
    return int(header[len("bytes=") : -1])


class Recorder:
    """Stands in for time.sleep and time.monotonic: records waits, advances a fake clock."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Recorder()


@pytest.fixture
def policy(clock):
    return FetchPolicy(
        connect_timeout=2.0,
        read_timeout=2.0,
        retries=2,
        backoff_factor=0.5,
        politeness_delay=2.0,
        chunk_size=4096,
        sleep=clock.sleep,
        clock=clock.clock,
    )


def url_source(url: str, name: str = "book", **kwargs) -> Source:
    return Source(name=name, url=url, clean=kwargs.pop("clean", "auto"), paced=kwargs.pop("paced", False), **kwargs)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(autouse=True)
def shipped_catalog(monkeypatch):
    """Every test starts from the shipped catalog, whatever the shell running pytest has set."""
    monkeypatch.delenv("CHARRNN_CATALOG", raising=False)


# ---------------------------------------------------------------------------------------------
# Success, the record, the User-Agent


def test_success_writes_text_and_record(server, policy, tmp_path):
    url = server.route("/book.txt", lambda h: send(h, TEXT))
    progress = []
    result = download(
        url_source(url, sha256=TEXT_SHA, title="Foxes"),
        tmp_path / "corpora",
        policy=policy,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert result.downloaded
    assert result.path == tmp_path / "corpora" / "book.txt"
    assert result.path.read_bytes() == TEXT
    assert listing(tmp_path / "corpora") == ["book.meta.json", "book.txt"]
    record = json.loads(result.record_path.read_text())
    assert record["source_url"] == url
    assert record["raw_sha256"] == record["text_sha256"] == TEXT_SHA
    assert record["raw_bytes"] == record["text_bytes"] == len(TEXT)
    assert record["encoding"] == "utf-8" and record["title"] == "Foxes"
    assert record["downloaded_at"].endswith("+00:00")
    assert progress[-1] == (len(TEXT), len(TEXT))
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert server.seen("/book.txt")[0].headers["user-agent"] == f"charrnn/{__version__}" == USER_AGENT
    assert result.warnings == () and policy.sleep.__self__.sleeps == []


def test_gutenberg_book_through_a_mirror_is_decoded_and_cleaned(server, policy, tmp_path):
    raw = GUTENBERG_FILE.encode("cp1252")
    server.route("/cache/epub/98/pg98.txt", lambda h: send(h, raw))
    source = resolve_source("gutenberg:98", {}, mirror=server.base + "/")
    assert source.url == server.url("/cache/epub/98/pg98.txt") and source.paced
    warnings = []
    result = download(source, tmp_path, policy=policy, pacer=HostPacer(), on_warning=warnings.append)
    assert result.path.name == "gutenberg-98.txt"
    assert result.path.read_text(encoding="utf-8") == GUTENBERG_BOOK
    record = result.record
    assert record["title"] == "A Tale of Two Cities" and record["author"] == "Charles Dickens"
    assert record["gutenberg_id"] == 98 and record["cleaning"] == "gutenberg"
    assert record["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert record["text_sha256"] == hashlib.sha256(GUTENBERG_BOOK.encode()).hexdigest()
    assert record["licence"].startswith("Project Gutenberg licence")
    # Pure ASCII here, so it is valid UTF-8: no encoding warning; nothing else to warn about either.
    assert record["encoding"] == "utf-8" and warnings == []


def test_cp1252_text_is_saved_as_utf8_with_a_warning(server, policy, tmp_path):
    text = "\u201cCaf\u00e9,\u201d she said.\r\n" * 50
    url = server.route("/old.txt", lambda h: send(h, text.encode("cp1252")))
    warnings = []
    result = download(url_source(url), tmp_path, policy=policy, on_warning=warnings.append)
    assert result.path.read_text(encoding="utf-8") == text.replace("\r\n", "\n")
    assert result.record["encoding"] == "cp1252"
    assert any("cp1252" in w for w in warnings)


# ---------------------------------------------------------------------------------------------
# Retries, politeness


def test_retry_after_503_honours_retry_after(server, policy, clock, tmp_path):
    answers = iter([503, 200])

    def flaky(handler):
        if next(answers) == 503:
            send(handler, b"busy", 503, {"Retry-After": "7"})
        else:
            send(handler, TEXT)

    url = server.route("/flaky.txt", flaky)
    result = download(url_source(url), tmp_path, policy=policy)
    assert result.path.read_bytes() == TEXT
    assert len(server.seen("/flaky.txt")) == 2
    assert clock.sleeps == [7]


def test_persistent_503_gives_up_after_the_retries(server, policy, clock, tmp_path):
    url = server.route("/down.txt", lambda h: send(h, b"down", 503))
    with pytest.raises(DownloadError, match=r"gave up .* after 2 retries: .*503"):
        download(url_source(url), tmp_path, policy=policy)
    assert len(server.seen("/down.txt")) == 3
    assert clock.sleeps == [0.5 * 2]  # urllib3: no wait before the first retry, then backoff
    assert listing(tmp_path) == []


def test_retry_after_longer_than_allowed_fails_at_once(server, policy, clock, tmp_path):
    url = server.route("/later.txt", lambda h: send(h, b"later", 429, {"Retry-After": "86400"}))
    with pytest.raises(DownloadError, match="asked to retry after 86400 s"):
        download(url_source(url), tmp_path, policy=policy)
    assert len(server.seen("/later.txt")) == 1 and clock.sleeps == []


def test_gutenberg_hosts_get_two_seconds_between_requests(server, policy, clock, tmp_path):
    answers = iter([503, 200, 200])

    def book(handler):
        if next(answers) == 503:
            send(handler, b"busy", 503)  # no Retry-After: the politeness delay still applies
        else:
            send(handler, GUTENBERG_FILE.encode())

    server.route("/cache/epub/98/pg98.txt", book)
    source = resolve_source("gutenberg:98", {}, mirror=server.base)
    pacer = HostPacer()
    download(source, tmp_path / "a", policy=policy, pacer=pacer)
    assert clock.sleeps == [2.0]  # the retry after the 503
    download(source, tmp_path / "b", policy=policy, pacer=pacer)
    assert clock.sleeps == [2.0, 2.0]  # the next book from the same host
    assert len(server.seen("/cache/epub/98/pg98.txt")) == 3


def test_other_hosts_are_not_paced(server, policy, clock, tmp_path):
    url = server.route("/book.txt", lambda h: send(h, TEXT))
    pacer = HostPacer()
    download(url_source(url), tmp_path / "a", policy=policy, pacer=pacer)
    download(url_source(url), tmp_path / "b", policy=policy, pacer=pacer)
    assert clock.sleeps == []


# ---------------------------------------------------------------------------------------------
# Broken bodies: resume with Range, or start again


def test_body_cut_short_resumes_with_range(server, policy, tmp_path):
    calls = []

    def cut_then_range(handler):
        calls.append(handler.headers.get("Range"))
        if len(calls) == 1:
            send(handler, TEXT, headers={"Accept-Ranges": "bytes", "ETag": '"v1"'}, cut_at=30_000)
        else:
            serve_range(handler, TEXT, {"ETag": '"v1"'})

    url = server.route("/cut.txt", cut_then_range)
    progress = []
    warnings = []
    result = download(
        url_source(url, sha256=TEXT_SHA),
        tmp_path,
        policy=policy,
        on_progress=lambda d, t: progress.append((d, t)),
        on_warning=warnings.append,
    )
    assert result.path.read_bytes() == TEXT
    assert calls[0] is None and 0 < range_start(calls[1]) <= 30_000  # resumes from what it has
    assert server.seen("/cut.txt")[1].headers["if-range"] == '"v1"'
    assert server.seen("/cut.txt")[1].headers["accept-encoding"] == "identity"  # ranges of plain bytes
    assert progress[-1] == (len(TEXT), len(TEXT))
    assert all(total == len(TEXT) for _, total in progress)
    assert any("resumed 1 time" in w for w in warnings)
    assert result.record["warnings"] == warnings


def test_server_without_range_support_starts_again(server, policy, tmp_path):
    calls = []

    def cut_then_whole(handler):
        calls.append(handler.headers.get("Range"))
        send(handler, TEXT, cut_at=30_000 if len(calls) == 1 else None)  # ignores Range

    url = server.route("/norange.txt", cut_then_whole)
    warnings = []
    result = download(url_source(url, sha256=TEXT_SHA), tmp_path, policy=policy, on_warning=warnings.append)
    assert result.path.read_bytes() == TEXT  # not the first bytes twice
    assert calls[0] is None and 0 < range_start(calls[1]) <= 30_000
    assert any("started again" in w for w in warnings)


def test_a_mismatched_partial_response_stops_range_requests(server, policy, tmp_path):
    calls = []

    def bad_ranges(handler):
        calls.append(handler.headers.get("Range"))
        if handler.headers.get("Range"):  # claims 206 but sends the body from the start
            send(handler, TEXT, 206, {"Content-Range": f"bytes 0-{len(TEXT) - 1}/{len(TEXT)}"})
        else:
            send(handler, TEXT, cut_at=30_000 if len(calls) < 4 else None)

    url = server.route("/odd.txt", bad_ranges)
    assert download(url_source(url), tmp_path, policy=policy).path.read_bytes() == TEXT
    assert calls[0] is None and calls[1].startswith("bytes=") and calls[2:] == [None, None]


def test_accept_ranges_none_starts_again_without_asking(server, policy, tmp_path):
    calls = []

    def cut_then_whole(handler):
        calls.append(handler.headers.get("Range"))
        send(handler, TEXT, headers={"Accept-Ranges": "none"}, cut_at=30_000 if len(calls) == 1 else None)

    url = server.route("/norange.txt", cut_then_whole)
    assert download(url_source(url), tmp_path, policy=policy).path.read_bytes() == TEXT
    assert calls == [None, None]


def test_a_body_that_keeps_breaking_is_an_error(server, policy, tmp_path):
    url = server.route("/broken.txt", lambda h: send(h, TEXT, cut_at=100))
    with pytest.raises(DownloadError, match="broke off"):
        download(url_source(url), tmp_path, policy=policy)
    assert len(server.seen("/broken.txt")) == policy.max_interruptions + 1
    assert listing(tmp_path) == []


def test_read_timeout_mid_body_resumes(server, clock, tmp_path):
    calls = []

    def stall_then_range(handler):
        calls.append(handler.headers.get("Range"))
        if len(calls) == 1:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(TEXT)))
            handler.end_headers()
            handler.wfile.write(TEXT[:20_000])
            handler.wfile.flush()
            server.stall()
        else:
            serve_range(handler, TEXT)

    url = server.route("/slow.txt", stall_then_range)
    fast = FetchPolicy(read_timeout=0.5, retries=0, chunk_size=4096, sleep=clock.sleep, clock=clock.clock)
    assert download(url_source(url), tmp_path, policy=fast).path.read_bytes() == TEXT
    assert calls[0] is None and 0 < range_start(calls[1]) <= 20_000


def test_read_timeout_is_retried_then_reported(server, clock, tmp_path):
    url = server.route("/hang.txt", lambda h: server.stall())
    fast = FetchPolicy(read_timeout=0.3, retries=1, sleep=clock.sleep, clock=clock.clock)
    with pytest.raises(DownloadError, match=r"timed out waiting for 127\.0\.0\.1 \(no data for 0\.3 s\)"):
        download(url_source(url), tmp_path, policy=fast)
    assert len(server.seen("/hang.txt")) == 2
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# gzip


def test_gzip_encoding_progress_counts_wire_bytes(server, policy, tmp_path):
    compressed = gzip.compress(TEXT)
    assert len(compressed) * 5 < len(TEXT)
    url = server.route("/gz.txt", lambda h: send(h, compressed, headers={"Content-Encoding": "gzip"}))
    progress = []
    result = download(
        url_source(url, sha256=TEXT_SHA), tmp_path, policy=policy, on_progress=lambda d, t: progress.append((d, t))
    )
    assert result.path.read_bytes() == TEXT
    assert result.record["raw_bytes"] == len(TEXT)
    assert progress[-1] == (len(compressed), len(compressed))
    assert all(done <= total == len(compressed) for done, total in progress)
    assert "gzip" in server.seen("/gz.txt")[0].headers["accept-encoding"]


def test_gzip_body_cut_short_starts_again(server, policy, tmp_path):
    compressed = gzip.compress(TEXT)
    calls = []

    def cut_gzip(handler):
        calls.append(handler.headers.get("Range"))
        send(
            handler,
            compressed,
            headers={"Content-Encoding": "gzip"},
            cut_at=len(compressed) // 2 if len(calls) == 1 else None,
        )

    url = server.route("/gz.txt", cut_gzip)
    assert download(url_source(url), tmp_path, policy=policy).path.read_bytes() == TEXT
    assert calls == [None, None]  # a range of gzip bytes could not be appended to decoded text


def test_gzip_that_inflates_past_max_bytes_is_refused(server, clock, tmp_path):
    compressed = gzip.compress(TEXT)
    url = server.route("/bomb.txt", lambda h: send(h, compressed, headers={"Content-Encoding": "gzip"}))
    small = FetchPolicy(max_bytes=len(compressed) * 2, sleep=clock.sleep, clock=clock.clock)
    with pytest.raises(DownloadError, match="over the limit"):
        download(url_source(url), tmp_path, policy=small)
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Verification failures leave nothing behind


def test_wrong_checksum(server, policy, tmp_path):
    url = server.route("/book.txt", lambda h: send(h, TEXT))
    with pytest.raises(DownloadError, match=f"checksum mismatch for book: expected sha256 {'0' * 64}, got {TEXT_SHA}"):
        download(url_source(url, sha256="0" * 64), tmp_path / "corpora", policy=policy)
    assert not (tmp_path / "corpora").exists()  # the folder it created is gone too


def test_wrong_size(server, policy, tmp_path):
    url = server.route("/book.txt", lambda h: send(h, TEXT))
    with pytest.raises(DownloadError, match="size mismatch"):
        download(url_source(url, expected_bytes=len(TEXT) + 1), tmp_path, policy=policy)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("text/html; charset=utf-8", b"<p>Please solve this captcha</p>"),
        ("text/plain", b"\n<!DOCTYPE html>\n<html><body>Access denied</body></html>\n"),
        (None, b"<html><head><title>Blocked</title></head><body>no</body></html>"),
    ],
)
def test_html_page_is_refused(server, policy, tmp_path, content_type, body):
    url = server.route("/page.txt", lambda h: send(h, body, headers={"Content-Type": content_type}))
    with pytest.raises(DownloadError, match="HTML page instead of text"):
        download(url_source(url), tmp_path, policy=policy)
    assert listing(tmp_path) == []


def test_binary_file_is_refused(server, policy, tmp_path):
    url = server.route("/book.zip", lambda h: send(h, b"PK\x03\x04\x00\x00" + bytes(range(256))))
    with pytest.raises(DownloadError, match="binary"):
        download(url_source(url), tmp_path, policy=policy)
    assert listing(tmp_path) == []


def test_404(server, policy, tmp_path):
    with pytest.raises(DownloadError, match=r"^not found \(HTTP 404\): http://127\.0\.0\.1:\d+/missing\.txt$"):
        download(url_source(server.url("/missing.txt")), tmp_path, policy=policy)
    assert listing(tmp_path) == []
    assert len(server.seen("/missing.txt")) == 1  # a 404 is not retried


def test_over_max_bytes_by_content_length(server, clock, tmp_path):
    url = server.route("/big.txt", lambda h: send(h, TEXT))
    small = FetchPolicy(max_bytes=len(TEXT) - 1, sleep=clock.sleep, clock=clock.clock)
    with pytest.raises(DownloadError, match=f"is {len(TEXT):,} bytes, over the limit of {len(TEXT) - 1:,}"):
        download(url_source(url), tmp_path, policy=small)
    assert listing(tmp_path) == []


def test_over_max_bytes_without_content_length(server, clock, tmp_path):
    url = server.route("/endless.txt", lambda h: send(h, TEXT, headers={"Content-Length": None}))
    small = FetchPolicy(max_bytes=10_000, chunk_size=4096, sleep=clock.sleep, clock=clock.clock)
    with pytest.raises(DownloadError, match="over the limit of 10,000 bytes"):
        download(url_source(url), tmp_path, policy=small)
    assert listing(tmp_path) == []


def test_connection_refused(policy, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=f"cannot connect to 127.0.0.1:{port}: connection refused"):
        download(url_source(f"http://127.0.0.1:{port}/book.txt"), tmp_path, policy=policy)
    assert listing(tmp_path) == []


def test_dns_failure_message():
    gaierror = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    reason = urllib3.exceptions.NameResolutionError("nowhere.invalid", None, gaierror)
    error = requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/x", reason))
    message = describe_request_error(error, "https://nowhere.invalid/x")
    assert message == "cannot resolve host nowhere.invalid (offline, or a DNS failure): https://nowhere.invalid/x"


# ---------------------------------------------------------------------------------------------
# Existing files


def test_existing_file_is_kept_without_asking_the_server(server, policy, tmp_path):
    url = server.route("/book.txt", lambda h: send(h, TEXT))
    (tmp_path / "book.txt").write_text("mine\n")
    result = download(url_source(url), tmp_path, policy=policy)
    assert not result.downloaded and result.path == tmp_path / "book.txt"
    assert (tmp_path / "book.txt").read_text() == "mine\n"
    assert server.seen("/book.txt") == []


def test_force_replaces_only_after_success(server, policy, tmp_path):
    (tmp_path / "book.txt").write_text("mine\n")
    (tmp_path / "book.meta.json").write_text("{}")
    url = server.route("/book.txt", lambda h: send(h, TEXT, cut_at=10))  # always breaks off
    with pytest.raises(DownloadError, match="broke off"):
        download(url_source(url), tmp_path, policy=policy, force=True)
    assert (tmp_path / "book.txt").read_text() == "mine\n"
    assert (tmp_path / "book.meta.json").read_text() == "{}"
    assert listing(tmp_path) == ["book.meta.json", "book.txt"]

    server.route("/book.txt", lambda h: send(h, TEXT))
    result = download(url_source(url), tmp_path, policy=policy, force=True)
    assert result.downloaded and (tmp_path / "book.txt").read_bytes() == TEXT
    assert json.loads((tmp_path / "book.meta.json").read_text())["text_sha256"] == TEXT_SHA
    assert listing(tmp_path) == ["book.meta.json", "book.txt"]


# ---------------------------------------------------------------------------------------------
# Names, the catalog, paths


def test_shipped_catalog():
    catalog = load_catalog()
    shakespeare = catalog["tiny-shakespeare"]
    assert (
        shakespeare.url == "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    )
    assert shakespeare.bytes == 1_115_394
    assert shakespeare.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert shakespeare.clean == "none"
    books = {entry.gutenberg_id: entry for entry in catalog.values() if entry.gutenberg_id is not None}
    assert set(books) == {2600, 11, 100, 1342, 1661, 4363}
    for entry in books.values():
        assert entry.sha256 is None and entry.clean == "gutenberg"
        assert entry.title and entry.author and entry.approx_bytes and "public domain in the USA" in entry.licence
        assert corpus_paths(Path("corpora"), entry.name)  # every name is a safe file name
    assert books[2600].title == "War and Peace"


def test_catalog_entries_resolve_to_gutenberg_urls(tmp_path):
    catalog = load_catalog()
    source = resolve_source("war-and-peace", catalog)
    assert source.url == "https://www.gutenberg.org/cache/epub/2600/pg2600.txt" == gutenberg_url(2600)
    assert source.paced and source.clean == "gutenberg" and source.size_hint > 1_000_000
    mirrored = resolve_source("alice", catalog, mirror="https://mirror.example/gutenberg/")
    assert mirrored.url == "https://mirror.example/gutenberg/cache/epub/11/pg11.txt"
    assert not resolve_source("tiny-shakespeare", catalog, mirror="https://mirror.example").paced


def test_a_broken_catalog_is_a_clear_error(tmp_path):
    bad = tmp_path / "catalog.json"
    bad.write_text(json.dumps({"corpora": [{"name": "../evil", "url": "https://x.example/a.txt"}]}))
    with pytest.raises(DownloadError, match="invalid name"):
        load_catalog(bad)
    bad.write_text("{not json")
    with pytest.raises(DownloadError, match="cannot read the corpus catalog"):
        load_catalog(bad)


def test_charrnn_catalog_names_a_catalog_to_use_instead(monkeypatch, tmp_path):
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"corpora": [{"name": "mine", "url": "http://127.0.0.1:9/mine.txt"}]}))
    monkeypatch.setenv("CHARRNN_CATALOG", str(own))
    assert list(load_catalog()) == ["mine"]
    assert "tiny-shakespeare" in load_catalog(catalog_path())  # an explicit path wins
    monkeypatch.setenv("CHARRNN_CATALOG", str(tmp_path / "missing.json"))
    with pytest.raises(DownloadError, match="missing.json.*set by CHARRNN_CATALOG; unset it"):
        load_catalog()
    monkeypatch.setenv("CHARRNN_CATALOG", "")  # empty is unset
    assert "tiny-shakespeare" in load_catalog()


def test_charrnn_catalog_reaches_the_cli_and_its_help(monkeypatch, tmp_path):
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"corpora": [{"name": "mine", "title": "Mine", "url": "http://127.0.0.1:9/m.txt"}]}))
    runner = CliRunner()
    for command in ("download", "corpora"):
        assert "CHARRNN_CATALOG" in runner.invoke(main, [command, "--help"]).output
    monkeypatch.chdir(tmp_path)
    listed = runner.invoke(main, ["corpora"], env={"CHARRNN_CATALOG": str(own)})
    assert listed.exit_code == 0 and "Mine" in listed.output and "tiny-shakespeare" not in listed.output


@pytest.mark.parametrize(
    "url, name",
    [
        ("https://example.org/data/input.txt", "input"),
        ("https://example.org/a/..%2F..%2Fevil.txt", "evil"),
        ("https://example.org/%2e%2e", "example-org"),
        ("https://example.org/", "example-org"),
        ("https://example.org/dir/My%20Book%3F.TXT", "My-Book"),
        ("https://example.org/..\\..\\win.txt", "win"),
    ],
)
def test_names_from_urls_stay_plain_file_names(url, name):
    assert resolve_source(url, {}).name == name


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gutenberg:abc", "invalid Project Gutenberg id"),
        ("gutenberg:../1", "invalid Project Gutenberg id"),
        ("gutenberg:0", "invalid Project Gutenberg id"),
        ("ftp://example.org/a.txt", "unsupported URL scheme"),
        ("file:///etc/passwd", "unsupported URL scheme"),
        ("../../etc/passwd", "unknown corpus"),
        ("tiny-shakespear", "did you mean 'tiny-shakespeare'"),
    ],
)
def test_names_that_are_not_corpora(spec, message):
    with pytest.raises(DownloadError, match=message):
        resolve_source(spec, load_catalog())


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "", "x" * 200])
def test_unsafe_names_never_become_paths(tmp_path, name):
    with pytest.raises(DownloadError, match="unsafe corpus name"):
        corpus_paths(tmp_path, name)


def test_local_corpora_lists_downloads_with_sha(server, policy, tmp_path):
    url = server.route("/book.txt", lambda h: send(h, TEXT))
    download(url_source(url), tmp_path, policy=policy)
    (tmp_path / "notes.txt").write_text("not a download")
    found = local_corpora(tmp_path)
    assert [(c.name, c.bytes, c.sha256) for c in found] == [("book", len(TEXT), TEXT_SHA)]


# ---------------------------------------------------------------------------------------------
# The command line


@pytest.fixture
def cli(monkeypatch, clock, server, tmp_path):
    """The CLI with fake sleeps and a catalog whose entry lives on the local server."""
    monkeypatch.setattr(
        cli_download,
        "FetchPolicy",
        functools.partial(FetchPolicy, sleep=clock.sleep, clock=clock.clock, backoff_factor=0.0),
    )
    server.route("/tiny.txt", lambda h: send(h, TEXT))
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(
        json.dumps(
            {
                "corpora": [
                    {
                        "name": "tiny",
                        "title": "Tiny",
                        "url": server.url("/tiny.txt"),
                        "bytes": len(TEXT),
                        "sha256": TEXT_SHA,
                        "clean": "none",
                        "licence": "test licence",
                    },
                    {
                        "name": "bad-sum",
                        "title": "Bad",
                        "url": server.url("/tiny.txt"),
                        "sha256": "f" * 64,
                        "clean": "none",
                    },
                ]
            }
        )
    )
    monkeypatch.setattr(cli_download, "load_catalog", lambda: load_catalog(catalog_file))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args))


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)  # a handled error, not a crash
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def test_cli_download_prints_only_the_path(cli, tmp_path):
    result = cli("download", "tiny")
    assert result.exit_code == 0, result.output
    assert result.stdout == str(Path("corpora") / "tiny.txt") + "\n"
    assert (tmp_path / "corpora" / "tiny.txt").read_bytes() == TEXT
    assert "wrote corpora/tiny.txt" in result.stderr

    again = cli("download", "tiny")  # kept, path printed again
    assert again.exit_code == 0 and again.stdout == result.stdout
    assert "kept the existing" in again.stderr


def test_cli_gutenberg_id_with_mirror_and_dir(cli, server, tmp_path):
    server.route("/cache/epub/98/pg98.txt", lambda h: send(h, GUTENBERG_FILE.encode()))
    result = cli("download", "gutenberg:98", "--mirror", server.base, "--dir", "texts", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout == str(Path("texts") / "gutenberg-98.txt") + "\n" and result.stderr == ""
    assert (tmp_path / "texts" / "gutenberg-98.txt").read_text() == GUTENBERG_BOOK


def test_cli_errors_are_one_line(cli, server, tmp_path):
    assert_one_line_error(cli("download", "-q", server.url("/missing.txt")), "not found (HTTP 404)")
    assert_one_line_error(cli("download", "-q", "bad-sum"), "checksum mismatch")
    assert_one_line_error(cli("download", "-q", "no-such-corpus"), "unknown corpus 'no-such-corpus'")
    assert_one_line_error(cli("download", "-q", "--max-bytes", "1kB", "tiny"), "over the limit of 1,000 bytes")
    assert_one_line_error(cli("download", "-q", "--mirror", "nonsense", "gutenberg:1"), "--mirror must be")
    assert listing(tmp_path) == ["catalog.json"]


def test_cli_max_bytes_takes_units(cli):
    assert cli("download", "--max-bytes", "lots", "tiny").exit_code == 2
    assert cli("download", "-q", "--max-bytes", "2MB", "tiny").exit_code == 0


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "../../evil",
        "/tmp/evil",
        "corpora/../../evil",
        "..",
        "gutenberg:../../evil",
        "gutenberg:1/../../evil",
        "evil/../../x",
    ],
)
def test_cli_path_traversal_never_escapes_dir(cli, tmp_path, name):
    inside = tmp_path / "work"
    inside.mkdir()
    result = cli("download", "-q", "--dir", str(inside / "corpora"), name)
    assert_one_line_error(result)
    assert listing(tmp_path) == ["catalog.json", "work"] and listing(inside) == []


def test_cli_url_with_traversal_lands_inside_dir(cli, server, tmp_path):
    server.route("/..%2F..%2Fevil.txt", lambda h: send(h, TEXT))
    result = cli("download", "-q", "--dir", "corpora", server.url("/..%2F..%2Fevil.txt"))
    assert result.exit_code == 0, result.output
    assert result.stdout == str(Path("corpora") / "evil.txt") + "\n"
    assert listing(tmp_path) == ["catalog.json", "corpora"]


def test_cli_corpora_lists_catalog_and_downloads(cli):
    before = cli("corpora")
    assert before.exit_code == 0
    assert "tiny" in before.stdout and "test licence" in before.stdout and "Nothing downloaded" in before.stdout
    cli("download", "-q", "tiny")
    after = cli("corpora")
    assert str(Path("corpora") / "tiny.txt") in after.stdout and TEXT_SHA in after.stdout
    assert f"{len(TEXT):,}" in after.stdout


def test_progress_renderer_starts_a_new_bar_when_a_download_starts_again():
    out = io.StringIO()
    render = cli_download._ProgressRenderer("book", enabled=True, file=out)
    for done in (4096, 8192, 4096, 12288):  # 8192 -> 4096: the server made us start again
        render(done, 12288)
    render.close()
    assert out.getvalue().count("book") == 2
    quiet = io.StringIO()
    silent = cli_download._ProgressRenderer("book", enabled=False, file=quiet)
    silent(1, 2)
    silent.close()
    assert quiet.getvalue() == ""
