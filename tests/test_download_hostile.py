"""Downloads talk to servers we do not control: no https -> http downgrade, nothing a server says
reaches the terminal with its control characters, and memory stays bounded whatever the size."""

from __future__ import annotations

import codecs
import io
import os
import subprocess
import sys
import tracemalloc

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from test_download import server  # noqa: F401 - the local HTTP server fixture

from charrnn.corpus.download import DownloadError, FetchPolicy, download, resolve_source, safe_text
from charrnn.corpus.download.clean import clean_file
from charrnn.corpus.download.http import refuse_downgrade
from charrnn.corpus.gutenberg import decode_text, strip_gutenberg

FAST = FetchPolicy(retries=0, backoff_factor=0, politeness_delay=0, sleep=lambda s: None)


def _redirect(url: str, location: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 302
    response.url = url
    response.headers["Location"] = location
    return response


@pytest.mark.parametrize(
    "url, location, refused",
    [
        ("https://a.example/x.txt", "http://a.example/x.txt", True),
        ("https://a.example/x.txt", "//b.example/x.txt", False),  # scheme-relative: stays https
        ("https://a.example/x.txt", "/y.txt", False),
        ("https://a.example/x.txt", "https://b.example/y.txt", False),
        ("http://a.example/x.txt", "http://b.example/y.txt", False),  # asked for plain http
        ("https://a.example/x.txt", "HTTP://a.example/x.txt", True),
    ],
)
def test_a_redirect_from_https_to_http_is_refused(url, location, refused):
    response = _redirect(url, location)
    if refused:
        with pytest.raises(DownloadError, match="refused a redirect from https"):
            refuse_downgrade(response)
    else:
        refuse_downgrade(response)


def test_the_session_carries_the_downgrade_check():
    from charrnn.corpus.download.http import make_session

    assert refuse_downgrade in make_session().hooks["response"]


def test_control_characters_from_a_server_are_shown_escaped():
    assert safe_text("Not Found\x1b[2J\x1b]0;pwned\x07") == "Not Found\\x1b[2J\\x1b]0;pwned\\x07"
    assert safe_text("caf\u00e9 \u202eevil") == "caf\u00e9 \\u202eevil"
    assert safe_text("a tab\tstays") == "a tab\tstays"


def test_a_reason_phrase_with_escape_codes_is_printed_without_them(server, tmp_path):  # noqa: F811
    def answer(handler):
        handler.send_response(418, "Teapot\x1b[31mRED\x1b[0m")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    url = server.route("/evil.txt", answer)
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "download", url, "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert result.returncode == 1
    assert "\x1b" not in result.stderr + result.stdout
    assert "HTTP 418 Teapot\\x1b[31mRED" in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: HTTP 418") and "Traceback" not in result.stderr


LINE = st.sampled_from(
    [
        "*** START OF THE PROJECT GUTENBERG EBOOK A TALE ***",
        "*** END OF THE PROJECT GUTENBERG EBOOK A TALE ***",
        "End of the Project Gutenberg EBook of A Tale",
        "*** START OF THIS PROJECT GUTENBERG",
        "EBOOK X ***",
        "Produced by Someone",
        "Title: A Tale",
        "Author: Someone",
        "",
        "   ",
        "\t",
        "It was the best of times.",
        "caf\u00e9 \u2014 na\u00efve",
        "*",
        "End",
        "Character set encoding: ISO-8859-1",
    ]
) | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(LINE, max_size=40),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    codec=st.sampled_from(["utf-8", "utf-8-bom", "utf-16-le-bom", "cp1252", "latin-1"]),
    clean=st.sampled_from(["gutenberg", "auto", "none"]),
    final=st.booleans(),
)
def test_streamed_cleaning_gives_what_the_in_memory_functions_give(
    tmp_path_factory, lines, newline, codec, clean, final
):
    text = newline.join(lines) + (newline if final else "")
    if codec == "utf-8-bom":
        raw = codecs.BOM_UTF8 + text.encode("utf-8")
    elif codec == "utf-16-le-bom":
        raw = codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    else:
        raw = text.encode(codec, errors="replace")
    path = tmp_path_factory.mktemp("clean") / "raw.download"
    path.write_bytes(raw)

    decoded = decode_text(raw)
    expected, warnings = decoded.text, list(decoded.warnings)
    if clean != "none":
        cleaned = strip_gutenberg(decoded.text, warn_if_unmarked=clean == "gutenberg")
        expected, warnings = cleaned.text, warnings + list(cleaned.warnings)
    out = io.BytesIO()
    result = clean_file(path, out, clean)
    assert out.getvalue() == expected.encode("utf-8")
    assert result.encoding == decoded.encoding and list(result.warnings) == warnings
    assert result.bytes == len(out.getvalue()) and result.has_text == bool(expected.strip())


def test_downloading_a_large_file_holds_a_few_megabytes(server, tmp_path):  # noqa: F811
    from test_download import send

    book = "It was the best of times, it was the worst of times, caf\u00e9.\r\n" * 100_000  # ~6 MB
    raw = (
        "Title: Big\r\n\r\n*** START OF THE PROJECT GUTENBERG EBOOK BIG ***\r\n"
        + book
        + "*** END OF THE PROJECT GUTENBERG EBOOK BIG ***\r\n"
    ).encode("utf-8")
    url = server.route("/big.txt", lambda handler: send(handler, raw))
    source = resolve_source(url, {})
    tracemalloc.start()
    try:
        result = download(source, tmp_path, policy=FAST)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.record["cleaning"] == "gutenberg"
    assert result.path.stat().st_size == len(book.replace("\r\n", "\n").encode())
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MB for a {len(raw) / 2**20:.0f} MB body"
