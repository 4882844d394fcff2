"""Turn downloaded bytes into clean training text: decoding and Project Gutenberg boilerplate removal.

Pure functions on bytes and strings; nothing here touches the network or the disk. Warnings are
returned, never printed, so the caller decides how to show them.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

# A cleaned book shorter than this fraction of the whole text means a marker matched in the wrong
# place; keeping the whole text is the lesser evil.
MIN_KEPT_FRACTION = 0.10

# Gutenberg headers are short; the declared encoding and the title sit in the first few KiB.
_HEADER_SCAN_BYTES = 16_384

_PARAGRAPH_SCAN_LINES = 12


@dataclass(frozen=True)
class Decoded:
    text: str  # newlines normalised to "\n"
    encoding: str  # the codec that decoded the bytes, e.g. "utf-8", "cp1252"
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Cleaned:
    text: str
    found_start: bool
    found_end: bool
    warnings: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Decoding


_DECLARED_ENCODING = re.compile(r"^\s*Character set encoding:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)

# Spellings seen in Gutenberg headers that codecs.lookup does not know.
_ENCODING_ALIASES = {
    "iso latin-1": "latin-1",
    "iso-latin-1": "latin-1",
    "latin1": "latin-1",
    "unicode utf-8": "utf-8",
    "utf-8 (unicode)": "utf-8",
}


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR become LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def declared_encoding(raw: bytes) -> str | None:
    """The codec named by a Gutenberg 'Character set encoding:' header line, if any and known."""
    header = raw[:_HEADER_SCAN_BYTES].decode("latin-1")
    match = _DECLARED_ENCODING.search(header)
    if match is None:
        return None
    declared = match.group(1).strip().lower()
    candidates = [_ENCODING_ALIASES.get(declared, declared), declared.split()[0], declared.replace(" ", "-")]
    for candidate in candidates:
        try:
            return codecs.lookup(candidate).name
        except LookupError:
            continue
    return None


def decode_text(raw: bytes) -> Decoded:
    """Strict UTF-8 (BOM dropped); else the encoding the Gutenberg header declares; else cp1252;
    else latin-1 (which cannot fail). Anything but UTF-8 comes with a warning naming the codec."""
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if raw.startswith(bom):
            try:
                text = raw[len(bom) :].decode(codec)
            except UnicodeDecodeError:
                break
            warnings = () if codec == "utf-8" else (f"decoded as {codec} (byte order mark)",)
            return Decoded(normalise_newlines(text), codec, warnings)
    try:
        return Decoded(normalise_newlines(raw.decode("utf-8")), "utf-8", ())
    except UnicodeDecodeError:
        pass
    declared = declared_encoding(raw)
    fallbacks = [declared] if declared and declared not in ("utf-8", "ascii") else []
    for codec in fallbacks + ["cp1252"]:
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            continue
        why = "as its header declares" if codec == declared else "not valid UTF-8"
        return Decoded(normalise_newlines(text), codec, (f"decoded as {codec} ({why})",))
    text = raw.decode("latin-1")
    return Decoded(normalise_newlines(text), "latin-1", ("decoded as latin-1 (neither UTF-8 nor cp1252)",))


# ---------------------------------------------------------------------------------------------
# Header fields


def parse_header(text: str) -> dict[str, str]:
    """Title, Author and Language from a Gutenberg header, where present (first lines only)."""
    head = text[:_HEADER_SCAN_BYTES]
    fields: dict[str, str] = {}
    for key in ("Title", "Author", "Language"):
        match = re.search(rf"^\s*{key}:[ \t]*(\S.*?)\s*$", head, re.MULTILINE)
        if match:
            fields[key.lower()] = match.group(1)
    return fields


# ---------------------------------------------------------------------------------------------
# Boilerplate removal

_PROJECT_GUTENBERG = r"PROJECT\s+GUTENBERG(?:['\u2019]S)?"
_EBOOK = r"E-?(?:BOOK|TEXT)"

# "*** START OF THE PROJECT GUTENBERG EBOOK X ***", "THIS" for "THE", no space after the stars.
_START = re.compile(rf"^\*{{3,}}\s*START\s+OF\s+(?:(?:THE|THIS)\s+)?{_PROJECT_GUTENBERG}\s+{_EBOOK}", re.IGNORECASE)
# The old header: the small print ends, the book begins on the next line.
_SMALL_PRINT_END = re.compile(r"^\*+\s*END\s*\*?\s*THE\s+SMALL\s+PRINT", re.IGNORECASE)
_END_STARRED = re.compile(rf"^\*{{3,}}\s*END\s+OF\s+(?:(?:THE|THIS)\s+)?{_PROJECT_GUTENBERG}\s+{_EBOOK}", re.IGNORECASE)
# "End of the Project Gutenberg EBook of X", "End of Project Gutenberg's X".
_END_PLAIN = re.compile(rf"^End\s+of\s+(?:(?:the|this)\s+)?{_PROJECT_GUTENBERG}(?:\s|$)", re.IGNORECASE)

_CREDIT = re.compile(
    r"^(?:Produced\s+by|E-?text\s+prepared\s+by|Prepared\s+by|Transcribed\s+(?:by|from))\b", re.IGNORECASE
)


def _match_marker(lines: list[str], i: int, pattern: re.Pattern) -> int:
    """How many lines the marker starting at line i spans (0: no marker here, 1 or 2 if wrapped)."""
    line = lines[i].strip()
    if not line:
        return 0
    following = lines[i + 1].strip() if i + 1 < len(lines) else ""
    if pattern.match(line):
        # A starred marker whose closing stars went onto the next line.
        if line.startswith("*") and not line.endswith("*") and following.endswith("***"):
            return 2
        return 1
    if following and pattern.match(f"{line} {following}"):
        return 2
    return 0


def marker_at(line: str, following: str) -> tuple[str | None, int]:
    """("start", span) if a start marker begins on `line` (the book begins `span` lines on),
    ("end", 0) if an end marker does, else (None, 0). `following`: the next line ("" at the end)."""
    pair = [line, following]
    first = line.lstrip()[:1]
    if first == "*":
        span = _match_marker(pair, 0, _START) or _match_marker(pair, 0, _SMALL_PRINT_END)
        if span:
            return "start", span
        if _match_marker(pair, 0, _END_STARRED):
            return "end", 0
    elif first in ("E", "e") and _match_marker(pair, 0, _END_PLAIN):
        return "end", 0
    return None, 0


def _find_markers(lines: list[str]) -> tuple[list[int], list[int]]:
    """Line indices where the book may begin (the line after a start marker), and where an end
    marker begins."""
    body_starts: list[int] = []
    end_lines: list[int] = []
    for i, line in enumerate(lines):
        kind, span = marker_at(line, lines[i + 1] if i + 1 < len(lines) else "")
        if kind == "start":
            body_starts.append(i + span)
        elif kind == "end":
            end_lines.append(i)
    return body_starts, end_lines


def choose_body(
    body_starts: list[int], end_lines: list[int], *, warn_if_unmarked: bool = True
) -> tuple[int | None, int | None, list[str]]:
    """The book's first line and the end marker's line (None: not found) from the markers'
    lines, and the warnings to give."""
    first_start = body_starts[0] if body_starts else 0
    end = next((e for e in end_lines if e >= first_start), None)
    # The last start marker before the end: an old small-print block may follow a START line.
    usable_starts = [s for s in body_starts if end is None or s <= end]
    start = usable_starts[-1] if usable_starts else None
    warnings: list[str] = []
    if start is None and end is None:
        if warn_if_unmarked:
            warnings.append("no Project Gutenberg start or end marker found; kept the whole text")
        return None, None, warnings
    if start is None:
        warnings.append("no Project Gutenberg start marker found; kept the text from the beginning")
    if end is None:
        warnings.append("no Project Gutenberg end marker found; kept the text to the end")
    return start, end, warnings


def kept_too_little(cleaned_chars: int, text_chars: int, stripped_chars: int) -> str | None:
    """The warning when the book between the markers is too short to be right (None: it is not)."""
    if cleaned_chars < MIN_KEPT_FRACTION * stripped_chars:
        return (
            f"the text between the Project Gutenberg markers is only {cleaned_chars} of "
            f"{text_chars} characters; kept the whole text"
        )
    return None


def _drop_credit_paragraph(lines: list[str]) -> list[str]:
    """Remove a 'Produced by ...' paragraph at the very start of the book."""
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or not _CREDIT.match(lines[first].strip()):
        return lines
    end = first
    while end < len(lines) and lines[end].strip():
        end += 1
        if end - first > _PARAGRAPH_SCAN_LINES:
            return lines  # not a short credit paragraph; leave the text alone
    return lines[end:]


def _trim_blank_lines(lines: list[str]) -> str:
    start, stop = 0, len(lines)
    while start < stop and not lines[start].strip():
        start += 1
    while stop > start and not lines[stop - 1].strip():
        stop -= 1
    body = "\n".join(lines[start:stop])
    return body + "\n" if body else ""


def strip_gutenberg(text: str, *, warn_if_unmarked: bool = True) -> Cleaned:
    """Keep only the book between the Project Gutenberg start and end markers.

    A text without markers is kept whole (with a warning unless warn_if_unmarked is False); so is
    one whose book would be under MIN_KEPT_FRACTION of the text, since then a marker matched in the
    wrong place.
    """
    text = normalise_newlines(text)
    lines = text.split("\n")
    start, end, warnings = choose_body(*_find_markers(lines), warn_if_unmarked=warn_if_unmarked)
    if start is None and end is None:
        return Cleaned(text, False, False, tuple(warnings))

    body_lines = _drop_credit_paragraph(lines[start or 0 : end if end is not None else len(lines)])
    cleaned = _trim_blank_lines(body_lines)
    too_little = kept_too_little(len(cleaned), len(text), len(text.strip()))
    if too_little is not None:
        warnings.append(too_little)
        return Cleaned(text, start is not None, end is not None, tuple(warnings))
    return Cleaned(cleaned, start is not None, end is not None, tuple(warnings))


def has_gutenberg_markers(text: str) -> bool:
    body_starts, end_lines = _find_markers(normalise_newlines(text).split("\n"))
    return bool(body_starts or end_lines)
