"""The corpus catalog (corpora/catalog.json) and what a user can ask `charrnn download` for: a
catalog name, gutenberg:ID, or a URL, each resolved to a Source."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from charrnn.corpus.download.http import _one_line
from charrnn.errors import DownloadError

GUTENBERG_SITE = "https://www.gutenberg.org"
GUTENBERG_TEXT_PATH = "/cache/epub/{id}/pg{id}.txt"
GUTENBERG_LICENCE = "Project Gutenberg licence (most books public domain in the USA; see the book's header)"
CATALOG_FORMAT = "charrnn-catalog"
CATALOG_ENV = "CHARRNN_CATALOG"  # names a catalog file used instead of the shipped one

TEXT_SUFFIX = ".txt"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_GUTENBERG_SPEC = re.compile(r"^gutenberg:(.*)$", re.IGNORECASE)
_CLEAN_MODES = ("gutenberg", "auto", "none")


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
        raise DownloadError(f"cannot read the corpus catalog {path}: {_one_line(error)}{from_environment}") from None
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
        assert url is not None  # a catalog entry has exactly one of url and gutenberg_id
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
