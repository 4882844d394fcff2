"""Fetch public-domain corpora over HTTP and leave clean UTF-8 text files beside a JSON record.

    catalog   the corpus catalog, and what a user can ask for (a name, gutenberg:ID, a URL)
    http      the policy, retries and pacing, `fetch` (one URL streamed into a file)
    clean     decoding and Gutenberg boilerplate removal, streamed from file to file
    store     the destination folder: NAME.txt and NAME.meta.json, written whole or not at all

The body streams to a temporary file in the destination folder, the clean text streams from it to
a second one, and only a complete, verified text is renamed into place (with its record), so a
failure leaves nothing behind and never clobbers an existing file. Memory stays a few MB (and the
longest line) whatever the file's size.

The library never prints: progress goes to an on_progress(done_bytes, total_bytes_or_None)
callback and warnings to on_warning(message) (and into the result and the record). Anything a
server sent is stripped of control characters (http.safe_text) before it is put in a message.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import requests

from charrnn import __version__
from charrnn.atomic import temporary_beside
from charrnn.corpus.download.catalog import (
    CATALOG_ENV,
    CATALOG_FORMAT,
    GUTENBERG_LICENCE,
    GUTENBERG_SITE,
    GUTENBERG_TEXT_PATH,
    CatalogEntry,
    Source,
    check_base_url,
    gutenberg_url,
    load_catalog,
    resolve_source,
)
from charrnn.corpus.download.clean import clean_file
from charrnn.corpus.download.http import (
    DEFAULT_MAX_BYTES,
    DEFAULT_POLICY,
    GUTENBERG_PACER,
    RETRY_STATUSES,
    USER_AGENT,
    Fetched,
    FetchPolicy,
    HostPacer,
    ProgressCallback,
    describe_request_error,
    fetch,
    make_session,
    safe_text,
)
from charrnn.corpus.download.store import (
    AGAIN,
    RECORD_FORMAT,
    RECORD_SUFFIX,
    TEXT_SUFFIX,
    LocalCorpus,
    _make_directory,
    _remove_empty,
    commit_text,
    corpus_paths,
    local_corpora,
    read_record,
)
from charrnn.errors import DownloadError, describe_os_error

WarningCallback = Callable[[str], None]
HEAD_BYTES = 8192

__all__ = [
    "CATALOG_ENV",
    "CATALOG_FORMAT",
    "GUTENBERG_LICENCE",
    "GUTENBERG_SITE",
    "GUTENBERG_TEXT_PATH",
    "CatalogEntry",
    "Source",
    "check_base_url",
    "gutenberg_url",
    "load_catalog",
    "resolve_source",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_POLICY",
    "GUTENBERG_PACER",
    "RETRY_STATUSES",
    "USER_AGENT",
    "FetchPolicy",
    "Fetched",
    "HostPacer",
    "describe_request_error",
    "fetch",
    "make_session",
    "safe_text",
    "RECORD_FORMAT",
    "RECORD_SUFFIX",
    "TEXT_SUFFIX",
    "LocalCorpus",
    "corpus_paths",
    "local_corpora",
    "read_record",
    "DownloadError",
    "DownloadResult",
    "download",
]


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
        message = safe_text(message)
        warnings.append(message)
        if on_warning is not None:
            on_warning(message)

    created = _make_directory(directory)
    raw_path: Path | None = None
    finished = False
    try:
        fd, raw_path = _new_raw_file(directory, source)
        fetched = _fetch_into(fd, source, text_path, policy, session, pacer, on_progress)
        if fetched.resumed:
            warn(f"the connection broke; resumed {fetched.resumed} time(s) with a Range request")
        if fetched.restarted:
            warn(f"the connection broke; started again from the beginning {fetched.restarted} time(s)")
        record = _clean_and_store(raw_path, source, fetched, text_path, record_path, warn, warnings)
        finished = True
        return DownloadResult(text_path, record_path, True, record, tuple(warnings))
    finally:
        if raw_path is not None:
            raw_path.unlink(missing_ok=True)
        if not finished:
            _remove_empty(created)


def _new_raw_file(directory: Path, source: Source) -> tuple[int, Path]:
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{source.name}.", suffix=".download")
    except OSError as error:
        raise DownloadError("cannot write in " + describe_os_error(error, directory, then=AGAIN)) from None
    return fd, Path(name)


def _fetch_into(fd: int, source: Source, text_path: Path, policy, session, pacer, on_progress) -> Fetched:
    """The body of source.url in the open temporary `fd` (closed here), verified (_verify)."""
    try:
        with os.fdopen(fd, "w+b") as raw_file:
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
            raw_file.seek(0)
            head = raw_file.read(HEAD_BYTES)
    except requests.RequestException as error:  # an OSError too, but a network one
        raise DownloadError(describe_request_error(error, source.url, policy)) from None
    except OSError as error:  # writing or reading back the body: a full disk, mostly
        raise DownloadError(f"cannot save {source.name}: " + describe_os_error(error, text_path, then=AGAIN)) from None
    _verify(source, fetched, head)
    return fetched


def _clean_and_store(
    raw_path: Path, source: Source, fetched: Fetched, text_path: Path, record_path: Path, warn, warnings: list[str]
) -> dict:
    """Clean text from raw_path into a temporary beside text_path, then both files into place."""
    try:
        with temporary_beside(text_path) as (out, temporary):
            cleaned = clean_file(raw_path, out, source.clean)
            for message in cleaned.warnings:
                warn(message)
            if not cleaned.has_text:
                raise DownloadError(f"no text in {source.url}")
            record = {
                "format": RECORD_FORMAT,
                "format_version": 1,
                "name": source.name,
                "title": source.title or _from_server(cleaned.header.get("title")),
                "author": source.author or _from_server(cleaned.header.get("author")),
                "source_url": source.url,
                "final_url": safe_text(fetched.url),
                "gutenberg_id": source.gutenberg_id,
                "licence": source.licence,
                "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "raw_bytes": fetched.bytes,
                "raw_sha256": fetched.sha256,
                "encoding": cleaned.encoding,
                "cleaning": cleaned.cleaned_with,
                "text_bytes": cleaned.bytes,
                "text_sha256": cleaned.sha256,
                "warnings": warnings,
                "charrnn_version": __version__,
            }
        commit_text(temporary, text_path, record_path, record)
    except OSError as error:
        raise DownloadError(f"cannot save {source.name}: " + describe_os_error(error, text_path, then=AGAIN)) from None
    return record


def _from_server(value: str | None) -> str | None:
    return None if value is None else safe_text(value)
