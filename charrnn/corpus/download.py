"""Fetch public-domain corpora over HTTP and leave clean UTF-8 text files beside a JSON record.

Robust by construction: every request has connect and read timeouts; connection errors, 429 and
5xx are retried with backoff (urllib3 Retry) honouring Retry-After; a body broken mid-way resumes
with a Range request where the server allows it, else starts again. The body streams to a
temporary file in the destination folder and only a complete, verified text is renamed into place,
so a failure leaves nothing behind and never clobbers an existing file.

The library never prints: progress goes to an on_progress(done_bytes, total_bytes_or_None)
callback and warnings to on_warning(message) (and into the result and the record).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import unquote, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from charrnn import __version__
from charrnn.atomic import file_sha256, new_file_mode
from charrnn.errors import DownloadError, describe_os_error
from charrnn.corpus.gutenberg import decode_text, parse_header, strip_gutenberg

USER_AGENT = f"charrnn/{__version__}"
GUTENBERG_SITE = "https://www.gutenberg.org"
GUTENBERG_TEXT_PATH = "/cache/epub/{id}/pg{id}.txt"
GUTENBERG_LICENCE = "Project Gutenberg licence (most books public domain in the USA; see the book's header)"
DEFAULT_MAX_BYTES = 200_000_000
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

CATALOG_FORMAT = "charrnn-catalog"
CATALOG_ENV = "CHARRNN_CATALOG"  # names a catalog file used instead of the shipped one
RECORD_FORMAT = "charrnn-corpus"
TEXT_SUFFIX = ".txt"
RECORD_SUFFIX = ".meta.json"  # never collides with catalog.json, which may share the folder

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_GUTENBERG_SPEC = re.compile(r"^gutenberg:(.*)$", re.IGNORECASE)
_CLEAN_MODES = ("gutenberg", "auto", "none")

AGAIN = "run the download again"  # how to carry on after a fixable filesystem fault

ProgressCallback = Callable[[int, "int | None"], None]
WarningCallback = Callable[[str], None]


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

    def new(self, **kwargs) -> "_PoliteRetry":
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
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    host = _host_key(url)
    hasher = hashlib.sha256()
    written = 0  # bytes in `out`, all of them the start of the body in order
    validator: str | None = None  # ETag or Last-Modified of the body we are continuing
    may_resume = True
    resumed = restarted = interruptions = 0

    def start_over() -> None:
        nonlocal hasher, written, validator
        out.seek(0)
        out.truncate()
        hasher = hashlib.sha256()
        written = 0
        validator = None

    try:
        while True:
            headers = {}
            resuming = written > 0
            if resuming:
                headers["Range"] = f"bytes={written}-"
                headers["Accept-Encoding"] = "identity"  # a range of gzip bytes cannot be appended
                if validator:
                    headers["If-Range"] = validator
            if paced:
                pacer.wait(host, policy)
            try:
                response = session.get(
                    url, headers=headers, stream=True, timeout=(policy.connect_timeout, policy.read_timeout)
                )
            except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
                raise DownloadError(describe_request_error(error, url, policy)) from None
            finally:
                if paced:
                    pacer.mark(host, policy)

            with response:
                status = response.status_code
                if status in (404, 410):
                    raise DownloadError(f"not found (HTTP {status}): {url}")
                if status == 416 and resuming:
                    start_over()  # the body changed under us; fetch it whole
                    restarted += 1
                    continue
                if not 200 <= status < 300:
                    reason = f" {response.reason}" if response.reason else ""
                    raise DownloadError(f"HTTP {status}{reason} from {url}")

                content_type = response.headers.get("Content-Type", "")
                if _is_html(content_type):
                    raise DownloadError(f"got an HTML page instead of text (a block page or captcha?): {url}")

                length = _content_length(response.headers)
                encoding = response.headers.get("Content-Encoding", "").strip().lower()
                encoded = encoding not in ("", "identity")
                total = None
                if status == 206:
                    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                    if match is None or int(match.group(1)) != written or encoded:
                        # Not the continuation we asked for: fetch the whole body instead.
                        may_resume = False
                        start_over()
                        restarted += 1
                        interruptions += 1
                        if interruptions > policy.max_interruptions:
                            raise DownloadError(f"the server sent an unusable partial response: {url}")
                        continue
                    if match.group(3) != "*":
                        total = int(match.group(3))
                    resumed += 1
                else:
                    if resuming:  # the server ignored Range (or the body changed): start again
                        start_over()
                        restarted += 1
                    etag = response.headers.get("ETag")
                    validator = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
                    if response.headers.get("Accept-Ranges", "").strip().lower() == "none":
                        may_resume = False

                wire_start = 0 if encoded else written
                if total is None and length is not None:
                    total = wire_start + length
                if total is None and not encoded:
                    total = size_hint
                limited = length if encoded else total   # total is known whenever length is
                if length is not None and limited is not None and limited > policy.max_bytes:
                    raise DownloadError(
                        f"{url} is {total if not encoded else length:,} bytes, over the limit of "
                        f"{policy.max_bytes:,} bytes (--max-bytes)"
                    )

                try:
                    for chunk in response.iter_content(policy.chunk_size):
                        if written + len(chunk) > policy.max_bytes:
                            raise DownloadError(
                                f"{url} is over the limit of {policy.max_bytes:,} bytes (--max-bytes)"
                            )
                        out.write(chunk)
                        hasher.update(chunk)
                        written += len(chunk)
                        if on_progress is not None:
                            on_progress(wire_start + response.raw.tell(), total)
                    received = response.raw.tell()
                    if length is None or received >= length:
                        out.flush()
                        return Fetched(response.url, written, hasher.hexdigest(), content_type, resumed, restarted)
                except (
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ConnectionError,
                    urllib3.exceptions.ProtocolError,
                    urllib3.exceptions.ReadTimeoutError,
                ):
                    pass  # the body broke off: resume or restart below
                except requests.exceptions.ContentDecodingError as error:
                    raise DownloadError(f"corrupt compressed response from {url}: {_one_line(error)}") from None
                can_resume = may_resume and not encoded

            interruptions += 1
            if interruptions > policy.max_interruptions:
                raise DownloadError(
                    f"the download of {url} broke off {interruptions} times "
                    f"(last at {written:,} bytes); giving up"
                )
            if not can_resume:
                start_over()
                restarted += 1
            if not paced:  # paced hosts already wait politeness_delay before the next request
                policy.sleep(min(policy.backoff_max, policy.backoff_factor * 2 ** (interruptions - 1)))
    finally:
        if own_session:
            session.close()


# ---------------------------------------------------------------------------------------------
# The catalog and the things a user can ask for


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    title: str
    author: str | None
    source: str
    url: str | None  # None for Gutenberg books: built from gutenberg_id and the mirror
    gutenberg_id: int | None
    bytes: int | None  # exact size, when pinned
    approx_bytes: int | None
    sha256: str | None
    clean: str  # "gutenberg", "auto" or "none"
    licence: str

    @property
    def size(self) -> int | None:
        return self.bytes if self.bytes is not None else self.approx_bytes


def _catalog_entry(raw: object, where: str) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise DownloadError(f"{where}: not a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise DownloadError(f"{where}: invalid name {name!r}")
    gutenberg_id = raw.get("gutenberg_id")
    url = raw.get("url")
    if (gutenberg_id is None) == (url is None):
        raise DownloadError(f"{where} ({name}): needs exactly one of url and gutenberg_id")
    if gutenberg_id is not None and (not isinstance(gutenberg_id, int) or gutenberg_id <= 0):
        raise DownloadError(f"{where} ({name}): invalid gutenberg_id {gutenberg_id!r}")
    if url is not None and (not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https")):
        raise DownloadError(f"{where} ({name}): invalid url {url!r}")
    sha256 = raw.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256)):
        raise DownloadError(f"{where} ({name}): invalid sha256")
    clean = raw.get("clean", "gutenberg" if gutenberg_id is not None else "auto")
    if clean not in _CLEAN_MODES:
        raise DownloadError(f"{where} ({name}): clean must be one of {', '.join(_CLEAN_MODES)}")
    for key in ("bytes", "approx_bytes"):
        if raw.get(key) is not None and (not isinstance(raw[key], int) or raw[key] <= 0):
            raise DownloadError(f"{where} ({name}): invalid {key}")
    source = raw.get("source") or (
        f"Project Gutenberg #{gutenberg_id}" if gutenberg_id is not None else urlsplit(url).netloc
    )
    return CatalogEntry(
        name=name,
        title=str(raw.get("title") or name),
        author=raw.get("author"),
        source=str(source),
        url=url,
        gutenberg_id=gutenberg_id,
        bytes=raw.get("bytes"),
        approx_bytes=raw.get("approx_bytes"),
        sha256=sha256,
        clean=clean,
        licence=str(raw.get("licence") or (GUTENBERG_LICENCE if gutenberg_id is not None else "unknown")),
    )


def load_catalog(path: str | os.PathLike | None = None) -> dict[str, CatalogEntry]:
    """The corpus catalog by name, in file order: `path`, else the file named by the environment
    variable CHARRNN_CATALOG (a catalog of one's own, or a local server's in tests), else the
    shipped corpora/catalog.json."""
    from_environment = ""
    if path is None and os.environ.get(CATALOG_ENV):
        path = os.environ[CATALOG_ENV]
        from_environment = f" (set by {CATALOG_ENV}; unset it to use the shipped catalog)"
    if path is None:
        from charrnn.resources import catalog_path

        path = catalog_path()
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DownloadError(
            f"cannot read the corpus catalog {path}: {_one_line(error)}{from_environment}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("corpora"), list):
        raise DownloadError(f"{path}: not a charrnn catalog (no 'corpora' list)")
    catalog: dict[str, CatalogEntry] = {}
    for index, raw in enumerate(data["corpora"]):
        entry = _catalog_entry(raw, f"{path}: entry {index}")
        if entry.name in catalog:
            raise DownloadError(f"{path}: duplicate name {entry.name!r}")
        catalog[entry.name] = entry
    return catalog


@dataclass(frozen=True)
class Source:
    """What to fetch, where it goes in the folder, and how to clean it."""

    name: str  # file stem inside the destination folder
    url: str
    clean: str  # "gutenberg", "auto" (only if it has Gutenberg markers) or "none"
    paced: bool  # a Gutenberg host: wait politeness_delay between requests
    title: str | None = None
    author: str | None = None
    licence: str | None = None
    sha256: str | None = None
    expected_bytes: int | None = None
    size_hint: int | None = None
    gutenberg_id: int | None = None


def gutenberg_url(book_id: int, mirror: str | None = None) -> str:
    """https://www.gutenberg.org/cache/epub/{id}/pg{id}.txt, or the same path under `mirror`."""
    base = GUTENBERG_SITE if mirror is None else check_base_url(mirror, "--mirror")
    return base.rstrip("/") + GUTENBERG_TEXT_PATH.format(id=book_id)


def check_base_url(url: str, what: str = "URL") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"{what} must be an http:// or https:// URL, not {url!r}")
    return url


def _is_gutenberg_host(url: str) -> bool:
    hostname = (urlsplit(url).hostname or "").lower()
    return hostname == "gutenberg.org" or hostname.endswith(".gutenberg.org")


def _name_from_url(url: str) -> str:
    """A safe file stem from the last segment of a URL's path (never a path of its own)."""
    parts = urlsplit(url)
    segment = unquote(parts.path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    stem = segment[: -len(TEXT_SUFFIX)] if segment.lower().endswith(TEXT_SUFFIX) else segment
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-_")
    stem = re.sub(r"\.{2,}", ".", stem)[:80].strip(".-_")
    if not stem or not _SAFE_NAME.match(stem):
        stem = re.sub(r"[^A-Za-z0-9-]+", "-", parts.hostname or "download").strip("-")[:80] or "download"
    return stem


def resolve_source(spec: str, catalog: Mapping[str, CatalogEntry], *, mirror: str | None = None) -> Source:
    """A catalog name, `gutenberg:ID` or an http(s) URL; anything else is a DownloadError."""
    spec = spec.strip()
    entry = catalog.get(spec)
    if entry is not None:
        url = gutenberg_url(entry.gutenberg_id, mirror) if entry.gutenberg_id is not None else entry.url
        if url is None:   # load_catalog never makes such an entry; one built by hand may be
            raise DownloadError(f"catalog entry {entry.name}: needs a url or a gutenberg_id")
        return Source(
            name=entry.name,
            url=url,
            clean=entry.clean,
            paced=entry.gutenberg_id is not None or _is_gutenberg_host(url),
            title=entry.title,
            author=entry.author,
            licence=entry.licence,
            sha256=entry.sha256,
            expected_bytes=entry.bytes,
            size_hint=entry.size,
            gutenberg_id=entry.gutenberg_id,
        )
    gutenberg = _GUTENBERG_SPEC.match(spec)
    if gutenberg is not None:
        book = gutenberg.group(1).strip()
        if not re.fullmatch(r"[0-9]{1,7}", book) or int(book) == 0:
            raise DownloadError(f"invalid Project Gutenberg id {book!r} (expected a number, e.g. gutenberg:2600)")
        book_id = int(book)
        return Source(
            name=f"gutenberg-{book_id}",
            url=gutenberg_url(book_id, mirror),
            clean="gutenberg",
            paced=True,
            licence=GUTENBERG_LICENCE,
            gutenberg_id=book_id,
        )
    parts = urlsplit(spec)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise DownloadError(f"invalid URL {spec!r}")
        return Source(
            name=_name_from_url(spec),
            url=spec,
            clean="auto",
            paced=_is_gutenberg_host(spec),
            licence="unknown (check the source)",
        )
    if "://" in spec:
        raise DownloadError(f"unsupported URL scheme {parts.scheme!r} (only http and https): {spec}")
    import difflib

    close = difflib.get_close_matches(spec, list(catalog), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; `charrnn corpora` lists the catalog"
    raise DownloadError(f"unknown corpus {spec!r}: not a catalog name, gutenberg:ID or http(s) URL{hint}")


# ---------------------------------------------------------------------------------------------
# Files in the destination folder


def corpus_paths(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """NAME.txt and NAME.meta.json inside `directory`; a name that could escape it is refused."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise DownloadError(f"unsafe corpus name {name!r}")
    directory = Path(directory)
    text_path = directory / f"{name}{TEXT_SUFFIX}"
    record_path = directory / f"{name}{RECORD_SUFFIX}"
    root = directory.resolve()
    for path in (text_path, record_path):
        if path.resolve().parent != root and not (path.is_symlink() and path.parent.resolve() == root):
            raise DownloadError(f"unsafe corpus name {name!r}")
    return text_path, record_path


def _make_directory(directory: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (deepest last) so a failure can remove them."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if current.exists() and not current.is_dir():
        raise DownloadError(f"{current} is a file, not a folder; choose another --dir")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError("cannot create the folder " + describe_os_error(error, directory, then=AGAIN)) from None
    return list(reversed(missing))


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _write_files_atomically(files: list[tuple[Path, bytes]]) -> None:
    """Write every file to a temporary name beside it, then rename them all into place."""
    temporaries: list[tuple[Path, Path]] = []
    path = files[0][0]
    try:
        for path, data in files:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temporaries.append((Path(name), path))
            with os.fdopen(fd, "wb") as handle:  # owns fd from here
                os.chmod(handle.fileno(), new_file_mode())  # mkstemp makes 0600; a text gets the usual mode
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for temporary, path in temporaries:
            os.replace(temporary, path)
    except OSError as error:
        raise DownloadError(describe_os_error(error, path, then=AGAIN)) from None
    finally:
        for temporary, _ in temporaries:
            temporary.unlink(missing_ok=True)


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html")) or (b"<html" in start and b"<body" in start)


def _verify(source: Source, fetched: Fetched, head: bytes) -> None:
    if fetched.bytes == 0:
        raise DownloadError(f"empty response from {source.url}")
    if _looks_like_html(head[:4096]):
        raise DownloadError(f"got an HTML page instead of text (a block page or captcha?): {source.url}")
    if b"\x00" in head[:8192] and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DownloadError(f"not a text file (binary data): {source.url}")
    if source.sha256 is not None and fetched.sha256 != source.sha256:
        raise DownloadError(
            f"checksum mismatch for {source.name}: expected sha256 {source.sha256}, got {fetched.sha256} "
            f"({fetched.bytes:,} bytes); nothing was saved"
        )
    if source.expected_bytes is not None and fetched.bytes != source.expected_bytes:
        raise DownloadError(
            f"size mismatch for {source.name}: expected {source.expected_bytes:,} bytes, got "
            f"{fetched.bytes:,}; nothing was saved"
        )


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    record_path: Path
    downloaded: bool  # False: the file was already there and was kept
    record: dict | None
    warnings: tuple[str, ...] = ()


def read_record(path: str | os.PathLike) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RECORD_FORMAT else None


def download(
    source: Source,
    directory: str | os.PathLike,
    *,
    force: bool = False,
    policy: FetchPolicy = DEFAULT_POLICY,
    session: requests.Session | None = None,
    pacer: HostPacer | None = None,
    on_progress: ProgressCallback | None = None,
    on_warning: WarningCallback | None = None,
) -> DownloadResult:
    """Fetch `source` into `directory` as NAME.txt (clean UTF-8, "\\n" line endings) beside
    NAME.meta.json. An existing NAME.txt is kept unless `force`; on any failure nothing is left
    behind and an existing file is untouched."""
    directory = Path(directory)
    text_path, record_path = corpus_paths(directory, source.name)
    if text_path.exists() and not force:
        if not text_path.is_file():
            raise DownloadError(f"{text_path} exists and is not a file")
        return DownloadResult(text_path, record_path, False, read_record(record_path))
    if text_path.is_dir():
        raise DownloadError(f"{text_path} exists and is not a file")

    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if on_warning is not None:
            on_warning(message)

    created = _make_directory(directory)
    raw_path: Path | None = None
    finished = False
    try:
        try:
            fd, name = tempfile.mkstemp(dir=directory, prefix=f".{source.name}.", suffix=".download")
        except OSError as error:
            raise DownloadError("cannot write in " + describe_os_error(error, directory, then=AGAIN)) from None
        raw_path = Path(name)
        try:
            with os.fdopen(fd, "wb") as raw_file:
                fetched = fetch(
                    source.url,
                    raw_file,
                    policy=policy,
                    session=session,
                    paced=source.paced,
                    pacer=pacer,
                    size_hint=source.size_hint,
                    on_progress=on_progress,
                )
            raw = raw_path.read_bytes()
        except requests.RequestException as error:  # an OSError too, but a network one
            raise DownloadError(describe_request_error(error, source.url, policy)) from None
        except OSError as error:  # writing or reading back the body: a full disk, mostly
            raise DownloadError(f"cannot save {source.name}: "
                                + describe_os_error(error, text_path, then=AGAIN)) from None
        _verify(source, fetched, raw[:8192])
        if fetched.resumed:
            warn(f"the connection broke; resumed {fetched.resumed} time(s) with a Range request")
        if fetched.restarted:
            warn(f"the connection broke; started again from the beginning {fetched.restarted} time(s)")

        decoded = decode_text(raw)
        for message in decoded.warnings:
            warn(message)
        text = decoded.text
        header = parse_header(text) if source.clean != "none" else {}
        cleaned_with = None
        if source.clean != "none":
            cleaned = strip_gutenberg(text, warn_if_unmarked=source.clean == "gutenberg")
            for message in cleaned.warnings:
                warn(message)
            if cleaned.found_start or cleaned.found_end:
                cleaned_with = "gutenberg"
            text = cleaned.text
        if not text.strip():
            raise DownloadError(f"no text in {source.url}")
        text_bytes = text.encode("utf-8")

        record = {
            "format": RECORD_FORMAT,
            "format_version": 1,
            "name": source.name,
            "title": source.title or header.get("title"),
            "author": source.author or header.get("author"),
            "source_url": source.url,
            "final_url": fetched.url,
            "gutenberg_id": source.gutenberg_id,
            "licence": source.licence,
            "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "raw_bytes": fetched.bytes,
            "raw_sha256": fetched.sha256,
            "encoding": decoded.encoding,
            "cleaning": cleaned_with,
            "text_bytes": len(text_bytes),
            "text_sha256": hashlib.sha256(text_bytes).hexdigest(),
            "warnings": warnings,
            "charrnn_version": __version__,
        }
        record_bytes = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        _write_files_atomically([(text_path, text_bytes), (record_path, record_bytes)])
        finished = True
        return DownloadResult(text_path, record_path, True, record, tuple(warnings))
    finally:
        if raw_path is not None:
            raw_path.unlink(missing_ok=True)
        if not finished:
            _remove_empty(created)


# ---------------------------------------------------------------------------------------------
# What is already downloaded


@dataclass(frozen=True)
class LocalCorpus:
    name: str
    path: Path
    bytes: int
    sha256: str
    record: dict | None


def local_corpora(directory: str | os.PathLike, catalog: Mapping[str, CatalogEntry] | None = None) -> list[LocalCorpus]:
    """Texts in `directory` that charrnn downloaded (they have a record) or that carry a
    catalog name, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob(f"*{TEXT_SUFFIX}")):
        name = path.name[: -len(TEXT_SUFFIX)]
        if name.startswith(".") or not path.is_file():
            continue
        record = read_record(directory / f"{name}{RECORD_SUFFIX}")
        if record is None and name not in (catalog or {}):
            continue
        try:
            size, digest = path.stat().st_size, file_sha256(path)
        except OSError:
            continue
        found.append(LocalCorpus(name, path, size, digest, record))
    return found
