"""A downloaded file turned into clean training text, streamed from one file to another.

The same text as charrnn.corpus.gutenberg's decode_text and strip_gutenberg would give on the
whole body in memory, but read a line at a time in a few passes over the downloaded file: memory
stays a few MB (and the longest line) whatever the file's size.

    1. the encoding: strict UTF-8 (BOM dropped), else the Gutenberg header's, else cp1252, else
       latin-1, each tried by decoding the file incrementally;
    2. the markers: each line with the next, where the book starts and ends, and the text's size;
    3. the text: the book's lines (or the whole text) written to the output.
"""

from __future__ import annotations

import codecs
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from charrnn.corpus.gutenberg import (
    _HEADER_SCAN_BYTES,
    _PARAGRAPH_SCAN_LINES,
    _drop_credit_paragraph,
    choose_body,
    declared_encoding,
    kept_too_little,
    marker_at,
    parse_header,
)

READ_BYTES = 1 << 20
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


@dataclass(frozen=True)
class Encoding:
    codec: str
    skip: int  # bytes of byte order mark before the text
    warnings: tuple[str, ...]


@dataclass
class CleanText:
    """What `clean_file` wrote."""

    encoding: str
    cleaned_with: str | None  # "gutenberg" if a marker was found, else None
    header: dict  # title, author, language from a Gutenberg header
    bytes: int = 0
    sha256: str = ""
    has_text: bool = False  # anything but whitespace
    warnings: tuple[str, ...] = ()


def _decodes(path: Path, codec: str, skip: int) -> bool:
    decoder = codecs.getincrementaldecoder(codec)("strict")
    try:
        with open(path, "rb") as raw:
            raw.seek(skip)
            for block in iter(lambda: raw.read(READ_BYTES), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def detect_encoding(path: Path) -> Encoding:
    """decode_text's choice of codec, made without holding the file."""
    with open(path, "rb") as raw:
        head = raw.read(_HEADER_SCAN_BYTES)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            if _decodes(path, codec, len(bom)):
                warnings = () if codec == "utf-8" else (f"decoded as {codec} (byte order mark)",)
                return Encoding(codec, len(bom), warnings)
            break
    if _decodes(path, "utf-8", 0):
        return Encoding("utf-8", 0, ())
    declared = declared_encoding(head)
    fallbacks = [declared] if declared and declared not in ("utf-8", "ascii") else []
    for codec in fallbacks + ["cp1252"]:
        if _decodes(path, codec, 0):
            why = "as its header declares" if codec == declared else "not valid UTF-8"
            return Encoding(codec, 0, (f"decoded as {codec} ({why})",))
    return Encoding("latin-1", 0, ("decoded as latin-1 (neither UTF-8 nor cp1252)",))


def _reader(path: Path, encoding: Encoding) -> io.TextIOWrapper:
    """The text, newlines normalised ("\\r\\n" and a lone "\\r" read as "\\n")."""
    raw = open(path, "rb")  # noqa: SIM115 (the TextIOWrapper returned owns and closes it)
    raw.seek(encoding.skip)
    return io.TextIOWrapper(raw, encoding=encoding.codec, errors="strict", newline=None)


def lines_of(path: Path, encoding: Encoding) -> Iterator[str]:
    """The text's lines as text.split("\\n") gives them (a text ending in a newline ends in "")."""
    with _reader(path, encoding) as text:
        for line in text:
            if line.endswith("\n"):
                yield line[:-1]
            else:
                yield line
                return
        yield ""


@dataclass
class _Scan:
    body_starts: list
    end_lines: list
    chars: int = 0  # len(text)
    stripped: int = 0  # len(text.strip())


def _scan(path: Path, encoding: Encoding) -> _Scan:
    scan = _Scan([], [])
    position, first, last_end, previous = 0, None, 0, None
    for i, line in enumerate(lines_of(path, encoding)):
        if previous is not None:
            _note_marker(scan, i - 1, previous, line)
        content = line.strip()
        if content:
            if first is None:
                first = position + len(line) - len(line.lstrip())
            last_end = position + len(line.rstrip())
        position += len(line) + 1
        previous = line
    if previous is not None:
        _note_marker(scan, i, previous, "")
    scan.chars = position - 1
    scan.stripped = last_end - first if first is not None else 0
    return scan


def _note_marker(scan: _Scan, index: int, line: str, following: str) -> None:
    kind, span = marker_at(line, following)
    if kind == "start":
        scan.body_starts.append(index + span)
    elif kind == "end":
        scan.end_lines.append(index)


class _Writer:
    """Lines joined by "\\n" into a binary file, counted and hashed."""

    def __init__(self, out):
        self.out = out
        self.hasher = hashlib.sha256()
        self.bytes = self.chars = 0
        self.lines = 0
        self.has_text = False

    def line(self, line: str) -> None:
        piece = ("\n" if self.lines else "") + line
        data = piece.encode("utf-8")
        self.out.write(data)
        self.hasher.update(data)
        self.bytes += len(data)
        self.chars += len(piece)
        self.lines += 1
        self.has_text = self.has_text or bool(line.strip())

    def end(self, newline: bool) -> None:
        if newline and self.lines:
            self.out.write(b"\n")
            self.hasher.update(b"\n")
            self.bytes += 1
            self.chars += 1


def _write_whole(path: Path, encoding: Encoding, out) -> _Writer:
    writer = _Writer(out)
    for line in lines_of(path, encoding):
        writer.line(line)
    writer.end(False)
    return writer


def _write_book(path: Path, encoding: Encoding, out, start: int, end: int | None) -> _Writer:
    """Lines [start, end) without a leading credit paragraph or blank lines at either end, then
    a newline (strip_gutenberg's book)."""
    writer = _Writer(out)
    head: list[str] = []  # from the first line with text, to judge the credit
    pending: list[str] = []  # blank lines, written only if text follows them
    judged = False
    for i, line in enumerate(lines_of(path, encoding)):
        if i < start:
            continue
        if end is not None and i >= end:
            break
        if not judged:
            if head or line.strip():
                head.append(line)
            if len(head) <= _PARAGRAPH_SCAN_LINES + 1:
                continue
            judged, lines = True, _drop_credit_paragraph(head)
        else:
            lines = [line]
        _emit(writer, lines, pending)
    if not judged:
        _emit(writer, _drop_credit_paragraph(head), pending)
    writer.end(True)
    return writer


def _emit(writer: _Writer, lines: list[str], pending: list[str]) -> None:
    for line in lines:
        if not line.strip():
            if writer.lines:
                pending.append(line)
            continue
        for blank in pending:
            writer.line(blank)
        pending.clear()
        writer.line(line)


def clean_file(path: Path, out, clean: str) -> CleanText:
    """Write the clean text of the downloaded file `path` to the binary file `out` (empty) as
    UTF-8: the whole text for clean "none", else the book between Project Gutenberg's markers
    where there are some (clean "gutenberg" warns when there are none)."""
    encoding = detect_encoding(path)
    warnings = list(encoding.warnings)
    header, cleaned_with = {}, None
    if clean != "none":
        with _reader(path, encoding) as text:
            header = parse_header(text.read(_HEADER_SCAN_BYTES))
        scan = _scan(path, encoding)
        start, end, found = choose_body(scan.body_starts, scan.end_lines, warn_if_unmarked=clean == "gutenberg")
        warnings += found
        if start is not None or end is not None:
            cleaned_with = "gutenberg"
            writer = _write_book(path, encoding, out, start or 0, end)
            too_little = kept_too_little(writer.chars, scan.chars, scan.stripped)
            if too_little is None:
                return _result(encoding, cleaned_with, header, writer, warnings)
            warnings.append(too_little)
            out.seek(0)
            out.truncate()
    writer = _write_whole(path, encoding, out)
    return _result(encoding, cleaned_with, header, writer, warnings)


def _result(encoding: Encoding, cleaned_with, header, writer: _Writer, warnings) -> CleanText:
    return CleanText(
        encoding.codec, cleaned_with, header, writer.bytes, writer.hasher.hexdigest(), writer.has_text, tuple(warnings)
    )
