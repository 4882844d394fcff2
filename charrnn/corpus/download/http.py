"""HTTP for downloads: the policy (timeouts, retries, limits), polite pacing per host, one-line
descriptions of failures, and `fetch`, which streams one URL into an open file.

Robust by construction: every request has connect and read timeouts; connection errors, 429 and
5xx are retried with backoff (urllib3 Retry) honouring Retry-After; a body broken mid-way resumes
with a Range request where the server allows it, else starts again; a redirect from https to plain
http is refused; anything a server says is shown without its control characters.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from charrnn import __version__
from charrnn.errors import DownloadError

USER_AGENT = f"charrnn/{__version__}"
DEFAULT_MAX_BYTES = 200_000_000
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

ProgressCallback = Callable[[int, "int | None"], None]


# ---------------------------------------------------------------------------------------------
# Policy: every knob a test needs to make the network fast and deterministic.


@dataclass(frozen=True)
class FetchPolicy:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 5  # per request, for connection errors, read timeouts, 429 and 5xx
    backoff_factor: float = 1.0  # urllib3 Retry: 0, 2, 4, 8 ... seconds between retries
    backoff_max: float = 60.0
    max_retry_after: float = 300.0  # a server asking for a longer wait makes the download fail
    politeness_delay: float = 2.0  # seconds between requests to the same Gutenberg host
    max_bytes: int = DEFAULT_MAX_BYTES
    max_interruptions: int = 5  # bodies broken mid-way (each followed by a resume or restart)
    chunk_size: int = 64 * 1024
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)


DEFAULT_POLICY = FetchPolicy()


class HostPacer:
    """Remembers when each host was last asked, so requests to it are spaced out."""

    def __init__(self) -> None:
        self._last_request: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str, policy: FetchPolicy) -> None:
        with self._lock:
            last = self._last_request.get(host)
        if last is not None:
            remaining = policy.politeness_delay - (policy.clock() - last)
            if remaining > 0:
                policy.sleep(remaining)

    def mark(self, host: str, policy: FetchPolicy) -> None:
        with self._lock:
            self._last_request[host] = policy.clock()


# One per process: successive downloads from the same Gutenberg host stay spaced out.
GUTENBERG_PACER = HostPacer()


class _RetryAfterTooLong(DownloadError):
    pass


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now (delta-seconds or an HTTP date); None if absent or
    malformed. Parsed here because newer urllib3 clamps it silently."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class _PoliteRetry(Retry):
    """urllib3 Retry whose waits go through the policy's sleep (so tests need not wait), which
    never waits less than `min_sleep` (the politeness delay for Gutenberg hosts) and which gives up
    when a server asks to come back later than the policy allows."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.policy = DEFAULT_POLICY
        self.min_sleep = 0.0

    def new(self, **kwargs) -> _PoliteRetry:
        retry = super().new(**kwargs)
        retry.policy = self.policy
        retry.min_sleep = self.min_sleep
        return retry

    def sleep(self, response=None) -> None:
        seconds = None
        if response is not None and self.respect_retry_after_header:
            seconds = _retry_after_seconds(response.headers.get("Retry-After"))
            if seconds is not None and seconds > self.policy.max_retry_after:
                raise _RetryAfterTooLong(
                    f"the server asked to retry after {seconds:.0f} s (more than "
                    f"{self.policy.max_retry_after:.0f} s); try again later"
                )
        if seconds is None:
            seconds = min(self.get_backoff_time(), self.policy.backoff_max)
        seconds = max(seconds, self.min_sleep)
        if seconds > 0:
            self.policy.sleep(seconds)


def make_session(policy: FetchPolicy = DEFAULT_POLICY, *, paced: bool = False) -> requests.Session:
    """A requests session with charrnn's User-Agent and retries; paced hosts also wait
    policy.politeness_delay before every retry."""
    retry = _PoliteRetry(
        total=policy.retries,
        connect=policy.retries,
        read=policy.retries,
        status=policy.retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        backoff_factor=policy.backoff_factor,
        respect_retry_after_header=True,
        raise_on_status=True,
    )
    retry.policy = policy
    retry.min_sleep = policy.politeness_delay if paced else 0.0
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.hooks["response"].append(refuse_downgrade)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def refuse_downgrade(response: requests.Response, *args, **kwargs) -> None:
    """A requests response hook: a redirect from https to plain http is refused (DownloadError),
    so a text asked for over TLS never arrives without it."""
    if not response.is_redirect:
        return
    target = urljoin(response.url, response.headers.get("Location", ""))
    if urlsplit(response.url).scheme == "https" and urlsplit(target).scheme != "https":
        raise DownloadError(
            f"refused a redirect from https to {safe_text(_one_line(target, 120))} (not encrypted): {response.url}"
        )


# ---------------------------------------------------------------------------------------------
# Describing failures in one line


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, its arguments that are errors, urllib3 `.reason`s, causes and contexts."""
    seen: set[int] = set()
    pending = [error]
    while pending and len(seen) < 32:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
        for linked in (getattr(current, "reason", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                pending.append(linked)


def _one_line(text: object, limit: int = 200) -> str:
    text = " ".join(safe_text(str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe_text(text: str) -> str:
    """Text a server sent (a reason phrase, a URL it redirected to, a book's title), with control
    characters (terminal escape codes, bidirectional overrides) shown as \\xNN instead."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", str(text)
    )


def describe_request_error(error: BaseException, url: str, policy: FetchPolicy = DEFAULT_POLICY) -> str:
    """A one-line explanation of why a request failed."""
    parts = urlsplit(url)
    host = parts.hostname or url
    causes = list(_causes(error))

    def has(*types) -> BaseException | None:
        return next((c for c in causes if isinstance(c, types)), None)

    name_resolution = getattr(urllib3.exceptions, "NameResolutionError", ())
    if has(socket.gaierror) or (name_resolution and has(name_resolution)):
        return f"cannot resolve host {host} (offline, or a DNS failure): {url}"
    if has(ConnectionRefusedError):
        return f"cannot connect to {parts.netloc}: connection refused: {url}"
    retry_error = has(requests.exceptions.RetryError, urllib3.exceptions.ResponseError)
    if retry_error is not None:
        reason = has(urllib3.exceptions.ResponseError)
        why = _one_line(reason) if reason is not None else "too many error responses"
        return f"gave up on {url} after {policy.retries} retries: {why}"
    if has(urllib3.exceptions.ReadTimeoutError, requests.exceptions.ReadTimeout):
        return f"timed out waiting for {host} (no data for {policy.read_timeout:g} s): {url}"
    connect_timeout = has(urllib3.exceptions.ConnectTimeoutError, requests.exceptions.ConnectTimeout)
    if connect_timeout is not None and not isinstance(connect_timeout, urllib3.exceptions.NewConnectionError):
        return f"timed out connecting to {host} (after {policy.connect_timeout:g} s): {url}"
    if has(requests.exceptions.SSLError, urllib3.exceptions.SSLError):
        return f"TLS error talking to {host}: {url}"
    if has(requests.exceptions.TooManyRedirects):
        return f"too many redirects: {url}"
    if has(requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema):
        return f"invalid URL: {url}"
    os_error = next((c for c in causes if isinstance(c, OSError) and c.strerror), None)
    if os_error is not None:
        return f"cannot connect to {parts.netloc}: {str(os_error.strerror).lower()}: {url}"
    return f"cannot download {url}: {_one_line(error) or type(error).__name__}"


# ---------------------------------------------------------------------------------------------
# Fetching one URL into an open file


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    bytes: int  # decoded bytes written (what the file holds)
    sha256: str
    content_type: str
    resumed: int  # Range requests that continued a broken body
    restarted: int  # broken bodies fetched again from the start


def _host_key(url: str) -> str:
    parts = urlsplit(url)
    return (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def _is_html(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type in ("text/html", "application/xhtml+xml")


@dataclass
class _Body:
    """What `fetch` has of a body so far: `written` bytes at the start of `out`, in order."""

    out: BinaryIO
    hasher: Any = field(default_factory=hashlib.sha256)  # a hashlib object (no public type)
    written: int = 0
    validator: str | None = None  # ETag or Last-Modified of the body we are continuing
    may_resume: bool = True
    resumed: int = 0
    restarted: int = 0
    interruptions: int = 0

    def start_over(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.hasher = hashlib.sha256()
        self.written = 0
        self.validator = None
        self.restarted += 1


def _request(session, url: str, body: _Body, policy: FetchPolicy, paced: bool, pacer: HostPacer):
    """One GET, asking for the rest of the body when some of it is already there."""
    headers = {}
    if body.written:
        headers["Range"] = f"bytes={body.written}-"
        headers["Accept-Encoding"] = "identity"  # a range of gzip bytes cannot be appended
        if body.validator:
            headers["If-Range"] = body.validator
    host = _host_key(url)
    if paced:
        pacer.wait(host, policy)
    try:
        return session.get(url, headers=headers, stream=True, timeout=(policy.connect_timeout, policy.read_timeout))
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        raise DownloadError(describe_request_error(error, url, policy)) from None
    finally:
        if paced:
            pacer.mark(host, policy)


_AGAIN = object()  # _expected_total's answer when the response cannot be used: ask again
_RESTART = object()  # _receive's answer when an encoded body broke off: start it over


def _expected_total(response, url: str, body: _Body, policy: FetchPolicy, encoded: bool):
    """The body's expected size on the wire (None: unknown), or _AGAIN after starting over;
    DownloadError for a status that ends the download."""
    status = response.status_code
    resuming = body.written > 0
    if status in (404, 410):
        raise DownloadError(f"not found (HTTP {status}): {url}")
    if status == 416 and resuming:
        body.start_over()  # the body changed under us; fetch it whole
        return _AGAIN
    if not 200 <= status < 300:
        reason = f" {_one_line(response.reason, 80)}" if response.reason else ""
        raise DownloadError(f"HTTP {status}{reason} from {url}")
    if _is_html(response.headers.get("Content-Type", "")):
        raise DownloadError(f"got an HTML page instead of text (a block page or captcha?): {url}")
    if status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != body.written or encoded:
            # Not the continuation we asked for: fetch the whole body instead.
            body.may_resume = False
            body.start_over()
            body.interruptions += 1
            if body.interruptions > policy.max_interruptions:
                raise DownloadError(f"the server sent an unusable partial response: {url}")
            return _AGAIN
        body.resumed += 1
        return int(match.group(3)) if match.group(3) != "*" else None
    if resuming:  # the server ignored Range (or the body changed): start again
        body.start_over()
    etag = response.headers.get("ETag")
    body.validator = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
    if response.headers.get("Accept-Ranges", "").strip().lower() == "none":
        body.may_resume = False
    return None


def _copy_body(response, url: str, body: _Body, policy: FetchPolicy, wire_start: int, total, on_progress) -> bool:
    """Stream the response into body.out; whether the body is complete (False: it broke off)."""
    length = _content_length(response.headers)
    try:
        for chunk in response.iter_content(policy.chunk_size):
            if body.written + len(chunk) > policy.max_bytes:
                raise DownloadError(f"{url} is over the limit of {policy.max_bytes:,} bytes (--max-bytes)")
            body.out.write(chunk)
            body.hasher.update(chunk)
            body.written += len(chunk)
            if on_progress is not None:
                on_progress(wire_start + response.raw.tell(), total)
        return length is None or response.raw.tell() >= length
    except (
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ConnectionError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.ReadTimeoutError,
    ):
        return False  # the body broke off: resume or restart
    except requests.exceptions.ContentDecodingError as error:
        raise DownloadError(f"corrupt compressed response from {url}: {_one_line(error)}") from None


def _receive(response, url: str, body: _Body, policy: FetchPolicy, size_hint, on_progress):
    """Take one response: a Fetched when the body is complete, _AGAIN to ask again (after a
    restart), None when it broke off and may be continued, _RESTART when it must start over."""
    length = _content_length(response.headers)
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    encoded = encoding not in ("", "identity")
    total = _expected_total(response, url, body, policy, encoded)
    if total is _AGAIN:
        return _AGAIN
    wire_start = 0 if encoded else body.written
    if total is None and length is not None:
        total = wire_start + length
    if total is None and not encoded:
        total = size_hint
    if length is not None and (total if not encoded else length) > policy.max_bytes:
        raise DownloadError(
            f"{url} is {total if not encoded else length:,} bytes, over the limit of "
            f"{policy.max_bytes:,} bytes (--max-bytes)"
        )
    if _copy_body(response, url, body, policy, wire_start, total, on_progress):
        body.out.flush()
        return Fetched(
            response.url,
            body.written,
            body.hasher.hexdigest(),
            response.headers.get("Content-Type", ""),
            body.resumed,
            body.restarted,
        )
    return _RESTART if encoded else None  # a range of an encoded body cannot be appended


def fetch(
    url: str,
    out,
    *,
    policy: FetchPolicy = DEFAULT_POLICY,
    session: requests.Session | None = None,
    paced: bool = False,
    pacer: HostPacer | None = None,
    size_hint: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> Fetched:
    """Stream `url` into the binary file `out` (opened for writing, empty), resuming or restarting
    broken bodies. Progress is reported in bytes on the wire against the expected wire size, so
    it stays right for gzip-encoded responses; `size_hint` stands in when the server sends no
    length. Raises DownloadError with a one-line message; `out` then holds garbage."""
    own_session = session is None
    if session is None:
        session = make_session(policy, paced=paced)
    pacer = pacer or GUTENBERG_PACER
    body = _Body(out)
    try:
        while True:
            with _request(session, url, body, policy, paced, pacer) as response:
                outcome = _receive(response, url, body, policy, size_hint, on_progress)
            if isinstance(outcome, Fetched):
                return outcome
            if outcome is _AGAIN:
                continue
            body.interruptions += 1
            if body.interruptions > policy.max_interruptions:
                raise DownloadError(
                    f"the download of {url} broke off {body.interruptions} times "
                    f"(last at {body.written:,} bytes); giving up"
                )
            if outcome is _RESTART or not body.may_resume:
                body.start_over()
            if not paced:  # paced hosts already wait politeness_delay before the next request
                policy.sleep(min(policy.backoff_max, policy.backoff_factor * 2 ** (body.interruptions - 1)))
    finally:
        if own_session:
            session.close()
