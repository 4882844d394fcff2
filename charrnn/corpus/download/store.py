"""Files in the destination folder: NAME.txt beside its record NAME.meta.json, written whole or not
at all through charrnn.atomic; and the corpora already there."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from charrnn.atomic import atomic_write_all, file_sha256
from charrnn.corpus.download.catalog import _SAFE_NAME, TEXT_SUFFIX, CatalogEntry
from charrnn.errors import DownloadError, describe_os_error

RECORD_FORMAT = "charrnn-corpus"
RECORD_SUFFIX = ".meta.json"  # never collides with catalog.json, which may share the folder
AGAIN = "run the download again"  # how to carry on after a fixable filesystem fault


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


def commit_text(text_temporary: Path, text_path: Path, record_path: Path, record: dict) -> None:
    """Rename the finished text (a temporary beside `text_path`) into place with its record
    (written whole first): a failure leaves both targets as they were."""
    record_bytes = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        atomic_write_all([(record_path, record_bytes)], ready=[(text_temporary, text_path)])
    except OSError as error:
        raise DownloadError(describe_os_error(error, text_path, then=AGAIN)) from None


def read_record(path: str | os.PathLike) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RECORD_FORMAT else None


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
