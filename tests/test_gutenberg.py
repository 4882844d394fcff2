"""Decoding and Project Gutenberg cleaning, on Gutenberg-style texts written here, one per variant."""

from __future__ import annotations

import pytest

from charrnn.corpus.gutenberg import (
    declared_encoding,
    decode_text,
    has_gutenberg_markers,
    parse_header,
    strip_gutenberg,
)

BOOK = (
    "".join(
        f"CHAPTER {n}.\n\nAlice was beginning to get very tired of sitting by her sister on the bank,\n"
        "and of having nothing to do: once or twice she had peeped into the book.\n\n"
        for n in range(1, 21)
    ).rstrip("\n")
    + "\n"
)

HEADER = (
    "The Project Gutenberg eBook of Alice's Adventures in Wonderland\n\n"
    "This ebook is for the use of anyone anywhere in the United States and\n"
    "most other parts of the world at no cost and with almost no restrictions.\n\n"
    "Title: Alice's Adventures in Wonderland\n\n"
    "Author: Lewis Carroll\n\n"
    "Language: English\n\n"
    "Character set encoding: UTF-8\n\n"
)

LICENCE = (
    "Updated editions will replace the previous one--the old editions will\n"
    "be renamed.\n\nSTART: FULL LICENSE\n\nTHE FULL PROJECT GUTENBERG LICENSE\n"
    "PLEASE READ THIS BEFORE YOU DISTRIBUTE OR USE THIS WORK\n"
)


def book_between(start: str, end: str, *, header: str = HEADER, before_book: str = "\n\n") -> str:
    return f"{header}{start}{before_book}{BOOK}\n\n{end}\n\n{LICENCE}"


def assert_clean(text: str) -> None:
    cleaned = strip_gutenberg(text)
    assert cleaned.text == BOOK
    assert cleaned.found_start and cleaned.found_end
    assert cleaned.warnings == ()


def test_the_start_and_end_markers():
    assert_clean(
        book_between(
            "*** START OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***",
            "*** END OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***",
        )
    )


def test_this_instead_of_the():
    assert_clean(
        book_between(
            "*** START OF THIS PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***",
            "*** END OF THIS PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***",
        )
    )


def test_no_space_after_the_asterisks():
    assert_clean(
        book_between(
            "***START OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND***",
            "***END OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND***",
        )
    )


def test_start_marker_wrapped_after_the_title_begins():
    assert_clean(
        book_between(
            "*** START OF THE PROJECT GUTENBERG EBOOK THE COMPLETE WORKS OF\nWILLIAM SHAKESPEARE ***",
            "*** END OF THE PROJECT GUTENBERG EBOOK THE COMPLETE WORKS OF\nWILLIAM SHAKESPEARE ***",
        )
    )


def test_markers_wrapped_inside_the_phrase():
    assert_clean(
        book_between(
            "*** START OF THIS PROJECT\nGUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***",
            "*** END OF THIS PROJECT\nGUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***",
        )
    )


def test_end_of_the_project_gutenberg_ebook_line():
    text = book_between(
        "*** START OF THIS PROJECT GUTENBERG EBOOK WAR AND PEACE ***",
        "End of the Project Gutenberg EBook of War and Peace, by Leo Tolstoy\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK WAR AND PEACE ***",
    )
    assert_clean(text)


def test_end_of_project_gutenbergs_line():
    text = book_between(
        "*** START OF THIS PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***",
        "End of Project Gutenberg's Alice's Adventures in Wonderland, by Lewis Carroll",
    )
    assert_clean(text)


def test_old_small_print_header():
    header = (
        "**The Project Gutenberg Etext of Pride and Prejudice, by Jane Austen**\n\n"
        "*****These eBooks Were Prepared By Thousands of Volunteers!*****\n\n"
        "**Welcome To The World of Free Plain Vanilla Electronic Texts**\n\n"
        "Title: Pride and Prejudice\n\nAuthor: Jane Austen\n\n"
        "***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***\n"
        'Why is this "Small Print!" statement here?  You know: lawyers.\n'
        "They tell us you might sue us if there is something wrong with\n"
        "your copy of this etext, even if you got it for free.\n\n"
    )
    text = book_between(
        "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*",
        "End of The Project Gutenberg Etext of Pride and Prejudice",
        header=header,
    )
    assert_clean(text)


def test_produced_by_credit_paragraph_is_dropped():
    text = book_between(
        "*** START OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***",
        "*** END OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***",
        before_book=(
            "\n\n\n\nProduced by Arthur DiBianca and David Widger\nand the Online Distributed Proofreading Team\n\n\n\n"
        ),
    )
    assert_clean(text)


def test_a_book_that_begins_with_produce_is_not_a_credit():
    book_start = "Produce of the fields\n\n"
    text = (
        f"{HEADER}*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n{book_start}{BOOK}\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\n"
    )
    assert strip_gutenberg(text).text == book_start + BOOK


def test_first_end_marker_wins_and_last_start_before_it():
    text = (
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\nsmall print\n"
        "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n"
        f"{BOOK}End of the Project Gutenberg EBook of X\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nlicence\n"
    )
    assert_clean(text)


def test_no_markers_keeps_the_whole_text_with_a_warning():
    cleaned = strip_gutenberg(BOOK)
    assert cleaned.text == BOOK
    assert not cleaned.found_start and not cleaned.found_end
    assert len(cleaned.warnings) == 1 and "no Project Gutenberg" in cleaned.warnings[0]
    assert strip_gutenberg(BOOK, warn_if_unmarked=False).warnings == ()
    assert not has_gutenberg_markers(BOOK)


def test_start_without_end_keeps_to_the_end_with_a_warning():
    cleaned = strip_gutenberg(f"{HEADER}*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n{BOOK}")
    assert cleaned.text == BOOK
    assert cleaned.found_start and not cleaned.found_end
    assert any("no Project Gutenberg end marker" in w for w in cleaned.warnings)


def test_end_without_start_keeps_from_the_beginning_with_a_warning():
    cleaned = strip_gutenberg(f"{BOOK}\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\n{LICENCE}")
    assert cleaned.text == BOOK
    assert any("no Project Gutenberg start marker" in w for w in cleaned.warnings)


def test_never_cuts_a_book_down_to_almost_nothing():
    # The markers enclose a single line: that is a misplaced marker, not a book.
    text = (
        f"{HEADER}*** START OF THE PROJECT GUTENBERG EBOOK X ***\nonly this\n"
        f"*** END OF THE PROJECT GUTENBERG EBOOK X ***\n{BOOK}"
    )
    cleaned = strip_gutenberg(text)
    assert cleaned.text == text
    assert any("kept the whole text" in w for w in cleaned.warnings)


def test_crlf_text_is_cleaned_to_newlines():
    text = book_between(
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***", "*** END OF THE PROJECT GUTENBERG EBOOK X ***"
    ).replace("\n", "\r\n")
    assert_clean(text)


def test_header_fields():
    assert parse_header(HEADER) == {
        "title": "Alice's Adventures in Wonderland",
        "author": "Lewis Carroll",
        "language": "English",
    }


# ---------------------------------------------------------------------------------------------
# Decoding


def test_utf8_with_bom_and_crlf():
    decoded = decode_text("\ufeffCaf\u00e9 \u2014 na\u00efve\r\nline two\rline three\n".encode("utf-8"))
    assert decoded.text == "Caf\u00e9 \u2014 na\u00efve\nline two\nline three\n"
    assert decoded.encoding == "utf-8"
    assert decoded.warnings == ()


def test_declared_header_encoding_is_used_when_not_utf8():
    raw = ("Title: Les Mis\u00e9rables\r\nCharacter set encoding: ISO-8859-1\r\n\r\n\u00e9t\u00e9 \u00bb\r\n").encode(
        "latin-1"
    )
    assert declared_encoding(raw) == "iso8859-1"
    decoded = decode_text(raw)
    assert decoded.text == "Title: Les Mis\u00e9rables\nCharacter set encoding: ISO-8859-1\n\n\u00e9t\u00e9 \u00bb\n"
    assert decoded.encoding == "iso8859-1"
    assert "iso8859-1" in decoded.warnings[0]


def test_cp1252_when_nothing_is_declared():
    raw = "\u201cQuoted,\u201d she said \u2014 caf\u00e9.\n".encode("cp1252")
    decoded = decode_text(raw)
    assert decoded.text == "\u201cQuoted,\u201d she said \u2014 caf\u00e9.\n"
    assert decoded.encoding == "cp1252"
    assert "cp1252" in decoded.warnings[0]


def test_wrongly_declared_utf8_falls_back_to_cp1252():
    raw = "Character set encoding: UTF-8\n\u201cx\u201d\n".encode("cp1252")
    decoded = decode_text(raw)
    assert decoded.encoding == "cp1252"
    assert decoded.text == "Character set encoding: UTF-8\n\u201cx\u201d\n"


def test_latin1_as_the_last_resort():
    raw = b"bytes \x81\x8d\x8f\x90\x9d undefined in cp1252 \xe9\n"  # and not UTF-8 either
    decoded = decode_text(raw)
    assert decoded.encoding == "latin-1"
    assert decoded.text == raw.decode("latin-1")
    assert "latin-1" in decoded.warnings[0]


@pytest.mark.parametrize("declared", ["Character set encoding: ASCII", "Character set encoding: klingon"])
def test_useless_declarations_are_ignored(declared):
    raw = f"{declared}\n\u00e9\n".encode("cp1252")
    assert decode_text(raw).encoding == "cp1252"
